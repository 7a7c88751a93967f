// Package vxlan is the VXLAN backend: one flannel.<VNI> device per node and,
// for each peer, a route, a permanent neighbour and an FDB entry, laid out
// exactly as upstream flanneld does so that both interoperate.
package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// TypeName is the Backend "Type" this package serves.
const TypeName = "vxlan"

// Backend is a VXLAN backend bound to one external interface.
type Backend struct {
	ext  *backend.ExternalInterface
	opts Options
	nl   *netlink.Handle
}

// New is the backend.Factory for "vxlan"; it works in the process's current
// network namespace.
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("vxlan: open netlink: %w", err)
	}
	return NewWithHandle(h, ext, raw)
}

// NewWithHandle builds the backend on a given netlink handle (for example one
// bound to another network namespace).
func NewWithHandle(h *netlink.Handle, ext *backend.ExternalInterface, raw json.RawMessage) (*Backend, error) {
	opts, err := parseOptions(raw)
	if err != nil {
		return nil, err
	}
	if ext == nil || ext.Iface == nil {
		return nil, fmt.Errorf("vxlan: no external interface")
	}
	return &Backend{ext: ext, opts: opts, nl: h}, nil
}

// RegisterNetwork creates (or adopts) flannel.<VNI>.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 || cfg.EnableIPv6 {
		return nil, fmt.Errorf("vxlan: only IPv4 networks are supported so far; set EnableIPv4 and leave EnableIPv6 off")
	}
	if !b.ext.IfaceAddr.Is4() {
		return nil, fmt.Errorf("vxlan: interface %s has no IPv4 address to send VXLAN traffic from", b.ext.Iface.Name)
	}
	mtu := b.opts.MTU
	if mtu == 0 {
		mtu = b.ext.Iface.MTU - overheadV4
	}
	dev, err := ensureDevice(b.nl, deviceSpec{
		name: fmt.Sprintf("flannel.%d", b.opts.VNI), vni: b.opts.VNI, port: b.opts.Port,
		vtepDev: b.ext.Iface.Index, srcAddr: b.ext.IfaceAddr,
		learning: b.opts.Learning, gbp: b.opts.GBP, mtu: mtu,
	})
	if err != nil {
		return nil, fmt.Errorf("vxlan: %w", err)
	}
	return &network{b: b, cfg: cfg, dev: dev, mtu: mtu, peers: map[string]peer{}}, nil
}

type network struct {
	b   *Backend
	cfg *config.Config
	dev *netlink.Vxlan
	mtu int
	own netip.Prefix

	mu         sync.Mutex
	peers      map[string]peer // by lease key: what is programmed now
	reconciled bool
}

func (n *network) MTU() int { return n.mtu }

func (n *network) LeaseAttrs() lease.Attrs {
	data, _ := json.Marshal(leaseData{VNI: n.b.opts.VNI, VtepMAC: n.dev.HardwareAddr.String()})
	return lease.Attrs{BackendType: TypeName, BackendData: data}
}

// Activate gives the device the subnet's network address as a /32, the
// source address of traffic the node itself sends into the overlay.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	n.own = own.Subnet
	if err := ensureOnlyAddress(n.b.nl, n.dev, netip.PrefixFrom(own.Subnet.Addr(), 32)); err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	if err := n.b.nl.LinkSetUp(n.dev); err != nil {
		return fmt.Errorf("vxlan: bring up %s: %w", n.dev.Name, err)
	}
	return nil
}

// HandleEvents programs and removes peers. The first batch is the full set
// of leases, so after it any flannel-shaped state the kernel still holds for
// leases that no longer exist is left over from an earlier run and removed.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range events {
		n.handle(ev)
	}
	if !n.reconciled {
		n.reconciled = true
		n.reconcile()
	}
}

func (n *network) handle(ev lease.Event) {
	key := ev.Lease.Key()
	old, had := n.peers[key]
	if ev.Type == lease.Removed {
		if had {
			n.remove(old)
			delete(n.peers, key)
			klog.Infof("vxlan: removed peer %s", old)
		}
		return
	}
	p, err := n.peerFor(&ev.Lease)
	if err != nil {
		klog.Errorf("vxlan: cannot program peer %s: %v", ev.Lease.String(), err)
		return
	}
	if had && old == p {
		return
	}
	if had {
		n.remove(old)
		delete(n.peers, key)
	}
	if err := n.program(p); err != nil {
		klog.Errorf("vxlan: program peer %s: %v", p, err)
		return
	}
	n.peers[key] = p
	klog.Infof("vxlan: added peer %s", p)
}
