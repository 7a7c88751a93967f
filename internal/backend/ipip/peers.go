package ipip

import (
	"context"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
)

// HandleEvents installs, replaces and removes peer routes; after the first
// (full) batch, routes into the cluster network on flannel.ipip (or, with
// DirectRouting, the external interface) that no peer accounts for are
// left from an earlier run and removed.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range events {
		n.handle(ev)
	}
	if !n.reconciled {
		n.reconciled = true
		n.removeStale()
	}
}

func (n *network) handle(ev lease.Event) {
	key := ev.Lease.Key()
	if ev.Type == lease.Removed {
		n.forget(key)
		return
	}
	l := &ev.Lease
	if l.Attrs.BackendType != TypeName || !l.Subnet.IsValid() || !l.Attrs.PublicIP.Unmap().Is4() {
		klog.Errorf("ipip: cannot route to peer %s: it uses backend %q (every node must use ipip) or has no IPv4 subnet and PublicIP",
			l, l.Attrs.BackendType)
		n.forget(key)
		return
	}
	r := n.routeFor(l.Subnet, l.Attrs.PublicIP.Unmap())
	if err := n.b.NL.RouteReplace(&r); err != nil {
		klog.Errorf("ipip: ip route replace %s via %s dev %s onlink: %v", l.Subnet, l.Attrs.PublicIP, linkName(n, r.LinkIndex), err)
		n.forget(key)
		return
	}
	if old, had := n.routes[key]; had && (old.LinkIndex != r.LinkIndex || !old.Gw.Equal(r.Gw)) {
		n.delRoute(old)
	}
	n.routes[key] = r
	klog.V(1).Infof("ipip: route %s via %s dev %s", l.Subnet, l.Attrs.PublicIP, linkName(n, r.LinkIndex))
}

// routeFor is "<subnet> via <peer> dev flannel.ipip onlink", or with
// DirectRouting and a peer on our segment "<subnet> via <peer> dev <ext>".
func (n *network) routeFor(subnet netip.Prefix, gw netip.Addr) netlink.Route {
	r := netlink.Route{Dst: backend.IPNet(subnet), Gw: net.IP(gw.AsSlice()), LinkIndex: n.dev.Attrs().Index, Flags: int(netlink.FLAG_ONLINK)}
	if n.b.Opts.DirectRouting && backend.CheckOnSegment(n.b.NL, n.b.Ext.Iface.Index, gw) == nil {
		r.LinkIndex, r.Flags = n.b.Ext.Iface.Index, 0
	}
	return r
}

func (n *network) forget(key string) {
	if old, had := n.routes[key]; had {
		delete(n.routes, key)
		n.delRoute(old)
	}
}

func (n *network) delRoute(r netlink.Route) {
	if err := n.b.NL.RouteDel(&r); err != nil && !backend.IsGone(err) {
		klog.Errorf("ipip: ip route del %s via %s: %v", r.Dst, r.Gw, err)
	}
}

func (n *network) removeStale() {
	keep := map[netip.Prefix]bool{n.own: true}
	for _, r := range n.routes {
		if p, ok := backend.PrefixOf(r.Dst); ok {
			keep[p] = true
		}
	}
	links := []int{n.dev.Attrs().Index}
	if n.b.Opts.DirectRouting {
		links = append(links, n.b.Ext.Iface.Index)
	}
	stale, err := backend.StaleRoutes(n.b.NL, links, n.network, keep)
	if err != nil {
		klog.Errorf("ipip: routes left from an earlier run are not cleaned up: %v", err)
		return
	}
	for _, r := range stale {
		klog.Infof("ipip: removing stale route %s via %s", r.Dst, r.Gw)
		n.delRoute(r)
	}
}

func linkName(n *network, index int) string {
	if index == n.dev.Attrs().Index {
		return DeviceName
	}
	return n.b.Ext.Iface.Name
}
