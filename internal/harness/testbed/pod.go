package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// PodNetworker attaches pod namespaces to their node. The hand-made
// HandWired is the default; a CNI-plugin networker can replace it.
type PodNetworker interface {
	// Attach gives p.NS (it exists, with lo up) an eth0 connected to
	// p.Node, with addresses and a default route, and sets p.IP / p.IP6.
	Attach(ctx context.Context, p *Pod) error
	// Detach undoes Attach on the node's side; the testbed deletes the pod
	// namespace afterwards.
	Detach(ctx context.Context, p *Pod) error
}

// HandWired does what the bridge CNI plugin would, from the node's
// subnet.env: bridge cni0 with the subnet's gateway address, a veth per pod,
// pod address gateway+index, default route via the gateway.
type HandWired struct{}

// Bridge is the pod bridge in each node namespace, as the flannel CNI
// configuration names it.
const Bridge = "cni0"

// hostVeth is the node-side name of pod p's veth.
func hostVeth(p *Pod) string { return fmt.Sprintf("vp%d", p.Index) }

// Attach implements PodNetworker.
func (HandWired) Attach(ctx context.Context, p *Pod) error {
	env, err := subnetenv.Read(p.Node.SubnetFile)
	if err != nil {
		return fmt.Errorf("read subnet.env of node %s (has flanneld written it?): %w", p.Node.Name, err)
	}
	var gws []netip.Prefix // gateway addresses with the subnet's length
	for _, s := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
		if s.IsValid() {
			gws = append(gws, s)
		}
	}
	if err := ensureBridge(p.Node.NS, env.MTU, gws); err != nil {
		return err
	}
	if err := VethPair(p.Node.NS, hostVeth(p), p.NS, "eth0", env.MTU); err != nil {
		return err
	}
	if err := WithHandle(p.Node.NS, func(h *netlink.Handle) error {
		br, err := h.LinkByName(Bridge)
		if err != nil {
			return err
		}
		l, err := h.LinkByName(hostVeth(p))
		if err != nil {
			return err
		}
		if err := h.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", hostVeth(p), Bridge, err)
		}
		return h.LinkSetUp(l)
	}); err != nil {
		return err
	}
	return WithHandle(p.NS, func(h *netlink.Handle) error {
		if err := linkUp(h, "eth0"); err != nil {
			return err
		}
		for _, gw := range gws {
			ip, err := nthAddr(gw, p.Index)
			if err != nil {
				return err
			}
			if err := addAddr(h, "eth0", netip.PrefixFrom(ip, gw.Bits())); err != nil {
				return err
			}
			if err := addRoute(h, netip.PrefixFrom(gwAny(gw), 0), gw.Addr()); err != nil {
				return err
			}
			if ip.Is4() {
				p.IP = ip
			} else {
				p.IP6 = ip
			}
		}
		return nil
	})
}

// Detach implements PodNetworker.
func (HandWired) Detach(ctx context.Context, p *Pod) error {
	return deletePort(p.Node.NS, hostVeth(p))
}

func gwAny(p netip.Prefix) netip.Addr {
	if p.Addr().Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// nthAddr is the gateway address plus n, which must stay inside the subnet
// and below its broadcast address.
func nthAddr(gw netip.Prefix, n int) (netip.Addr, error) {
	a := gw.Addr()
	for range n {
		a = a.Next()
	}
	last := a.Next()
	if !gw.Contains(a) || (a.Is4() && !gw.Contains(last)) {
		return netip.Addr{}, fmt.Errorf("pod %d does not fit in subnet %s", n, gw.Masked())
	}
	return a, nil
}

// ensureBridge creates the node's pod bridge unless it exists and gives
// it the gateway addresses.
func ensureBridge(ns string, mtu int, gws []netip.Prefix) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		if _, err := h.LinkByName(Bridge); err != nil {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: Bridge, MTU: mtu}}
			// EEXIST: a concurrent Attach on the same node made it.
			if err := h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add bridge %s: %w", Bridge, err)
			}
		}
		if err := linkUp(h, Bridge); err != nil {
			return err
		}
		for _, gw := range gws {
			if err := addAddr(h, Bridge, gw); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddPod creates a pod namespace on node n (fl-<testbed>-n<i>-p<j>) and
// attaches it with tb.PodNetworker. The node's subnet.env must exist.
func (tb *Testbed) AddPod(ctx context.Context, n *Node) (*Pod, error) {
	tb.mu.Lock()
	idx := 1
	for _, p := range n.Pods {
		idx = max(idx, p.Index+1)
	}
	name := fmt.Sprintf("%s-p%d", n.Name, idx)
	p := &Pod{Name: name, NS: tb.nsName(name), Index: idx, Node: n}
	n.Pods = append(n.Pods, p)
	pn := tb.PodNetworker
	tb.mu.Unlock()

	err := CreateNS(p.NS)
	if err == nil {
		err = SetSysctls(p.NS, map[string]string{"net.ipv6.conf.default.accept_dad": "0"})
	}
	if err == nil {
		// The networker fills in a copy: p is already visible to save().
		work := *p
		if err = pn.Attach(ctx, &work); err == nil {
			tb.mu.Lock()
			p.IP, p.IP6 = work.IP, work.IP6
			tb.mu.Unlock()
		}
	}
	if err != nil {
		if rerr := tb.RemovePod(context.WithoutCancel(ctx), p); rerr != nil {
			klog.Errorf("testbed %s: removing half-made pod %s: %v", tb.Name, p.Name, rerr)
		}
		return nil, fmt.Errorf("add pod %s: %w", name, err)
	}
	klog.V(2).Infof("testbed %s: pod %s at %s %s", tb.Name, p.Name, p.IP, p.IP6)
	return p, tb.save()
}

// RemovePod detaches the pod and deletes its namespace.
func (tb *Testbed) RemovePod(ctx context.Context, p *Pod) error {
	var errs []error
	if _, err := os.Stat(NSPath(p.Node.NS)); err == nil {
		errs = append(errs, tb.podNetworker().Detach(ctx, p))
	}
	errs = append(errs, DeleteNS(p.NS))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.Name, err)
	}
	tb.mu.Lock()
	n := p.Node
	for i, q := range n.Pods {
		if q == p {
			n.Pods = append(n.Pods[:i:i], n.Pods[i+1:]...)
			break
		}
	}
	tb.mu.Unlock()
	return tb.save()
}

func (tb *Testbed) podNetworker() PodNetworker {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.PodNetworker
}
