package hostgw

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/nldump"
)

// family is one address family's routes. The IPv4 half reads a lease's
// Subnet and PublicIP, the IPv6 half IPv6Subnet and PublicIPv6.
type family struct {
	b       *Backend
	v6      bool
	network netip.Prefix // the cluster network of this family
	local   netip.Addr   // this node's address on the external interface
	own     netip.Prefix

	// routes holds, by lease key, the route each current lease asks for:
	// the desired state, whether or not the kernel holds it right now.
	routes map[string]route
	// failed is set when a kernel write failed; the healer retries.
	failed bool
	// offSegment holds, by lease key, the public address a peer was last
	// reported unreachable at, so that the error is logged once per peer
	// and address rather than on every re-list.
	offSegment map[string]netip.Addr
}

func newFamily(b *Backend, v6 bool, network netip.Prefix, local netip.Addr) *family {
	return &family{b: b, v6: v6, network: network, local: local, routes: map[string]route{}, offSegment: map[string]netip.Addr{}}
}

func (f *family) name() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// publicField names the lease field the next hop comes from, as operators
// see it in etcd and node annotations.
func (f *family) publicField() string {
	if f.v6 {
		return "PublicIPv6"
	}
	return "PublicIP"
}

// route is one peer's route; comparable, so a change is detected with ==.
type route struct {
	subnet netip.Prefix
	gw     netip.Addr
}

func (r route) String() string { return fmt.Sprintf("%s via %s", r.subnet, r.gw) }

func (f *family) netlinkRoute(r route) *netlink.Route {
	return &netlink.Route{Dst: backend.IPNet(r.subnet), Gw: net.IP(r.gw.AsSlice()), LinkIndex: f.b.ext.Iface.Index}
}

func (f *family) routeFor(l *lease.Lease) (route, error) {
	if l.Attrs.BackendType != TypeName {
		return route{}, fmt.Errorf("it uses backend %q; every node of a network must use the same backend", l.Attrs.BackendType)
	}
	subnet, gw := l.Subnet, l.Attrs.PublicIP.Unmap()
	if f.v6 {
		subnet, gw = l.IPv6Subnet, l.Attrs.PublicIPv6
	}
	if !subnet.IsValid() || !gw.IsValid() || gw.Is6() != f.v6 {
		return route{}, fmt.Errorf("lease has no %s subnet or %s; a dual-stack network needs both on every node", f.name(), f.publicField())
	}
	return route{subnet: subnet, gw: gw}, nil
}

func (f *family) handle(ev lease.Event) {
	key := ev.Lease.Key()
	if ev.Type == lease.Removed {
		delete(f.offSegment, key)
		if old, had := f.routes[key]; had {
			f.forget(key)
			klog.Infof("host-gw: removed route %s", old)
		}
		return
	}
	r, err := f.routeFor(&ev.Lease)
	if err != nil {
		klog.Errorf("host-gw: cannot route to %s peer %s: %v", f.name(), ev.Lease.String(), err)
		f.forget(key)
		return
	}
	old, had := f.routes[key]
	if had && old == r {
		return
	}
	f.routes[key] = r
	installed := f.install(key, r)
	if had {
		// RouteReplace has normally swapped the old route out already;
		// this catches a kernel that kept both next hops, and a new next
		// hop that got no route.
		f.delete(old)
	}
	switch {
	case !installed:
	case !had:
		klog.Infof("host-gw: added route %s dev %s", r, f.b.ext.Iface.Name)
	default:
		klog.Infof("host-gw: re-routed %s (was %s)", r, old)
	}
}

// install puts r in the kernel if its next hop is on this node's segment,
// and otherwise takes out what an earlier form of it left there. It says
// whether the route is in place.
func (f *family) install(key string, r route) bool {
	if err := backend.CheckOnSegment(f.b.nl, f.b.ext.Iface.Index, r.gw); err != nil {
		// A route already installed for this peer now leads nowhere.
		f.delete(r)
		f.reportOffSegment(key, r, err)
		return false
	}
	delete(f.offSegment, key)
	if err := f.b.nl.RouteReplace(f.netlinkRoute(r)); err != nil {
		klog.Errorf("host-gw: add route %s dev %s: %v (retrying with back-off)", r, f.b.ext.Iface.Name, err)
		f.failed = true
		return false
	}
	return true
}

// reportOffSegment tells the operator, once per peer and address, why the
// peer gets no route and what to do about it.
func (f *family) reportOffSegment(key string, r route, why error) {
	if last, seen := f.offSegment[key]; seen && last == r.gw {
		return
	}
	f.offSegment[key] = r.gw
	klog.Errorf("host-gw: peer %s (%s %s) is not on this node's L2 segment (this node is %s on %s): %v. "+
		"No route is installed for it, since one would black-hole its pods' traffic. "+
		"host-gw needs all nodes on one L2 segment; use the vxlan backend, or vxlan with \"DirectRouting\": true "+
		"to keep plain routes between nodes that share a segment",
		r.subnet, f.publicField(), r.gw, f.local, f.b.ext.Iface.Name, why)
}

// forget drops key from the desired state and deletes its route, unless
// another current lease asks for the same destination.
func (f *family) forget(key string) {
	old, had := f.routes[key]
	if !had {
		return
	}
	delete(f.routes, key)
	f.release(old)
}

// release deletes old's route unless a current lease wants that
// destination too; then that lease's route is put back instead.
func (f *family) release(old route) {
	for key, r := range f.routes {
		if r.subnet == old.subnet {
			if r != old {
				f.delete(old)
				f.install(key, r)
			}
			return
		}
	}
	f.delete(old)
}

func (f *family) delete(r route) {
	if err := f.b.nl.RouteDel(f.netlinkRoute(r)); err != nil && !backend.IsGone(err) {
		klog.Errorf("host-gw: delete route %s dev %s: %v", r, f.b.ext.Iface.Name, err)
	}
}

// repair re-installs every desired route the kernel lacks (deleted by hand,
// flushed when the external interface went down) and counts each one.
func (f *family) repair(r backend.Repairs) error {
	ext, err := f.b.nl.LinkByIndex(f.b.ext.Iface.Index)
	if err != nil {
		return fmt.Errorf("look up %s: %w", f.b.ext.Iface.Name, err)
	}
	if ext.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("%s is down; its routes are restored when it comes back up", f.b.ext.Iface.Name)
	}
	family := netlink.FAMILY_V4
	if f.v6 {
		family = netlink.FAMILY_V6
	}
	have, err := nldump.List(func() ([]netlink.Route, error) {
		return f.b.nl.RouteListFiltered(family, &netlink.Route{LinkIndex: f.b.ext.Iface.Index}, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return fmt.Errorf("list routes on %s: %w", f.b.ext.Iface.Name, err)
	}
	for key, rt := range f.routes {
		want := f.netlinkRoute(rt)
		if slices.ContainsFunc(have, func(h netlink.Route) bool { return h.Dst.String() == want.Dst.String() && h.Gw.Equal(want.Gw) }) {
			continue
		}
		if f.install(key, rt) {
			klog.Infof("host-gw: restored route %s dev %s", rt, f.b.ext.Iface.Name)
			r.Add("route")
		}
	}
	if f.failed {
		return fmt.Errorf("some %s routes could not be installed", f.name())
	}
	return nil
}

// reconcile removes routes on the external interface into the cluster
// network that no current peer accounts for.
func (f *family) reconcile() {
	keep := map[netip.Prefix]bool{f.own: true}
	for _, r := range f.routes {
		keep[r.subnet] = true
	}
	stale, err := backend.StaleRoutes(f.b.nl, []int{f.b.ext.Iface.Index}, f.network, keep)
	if err != nil {
		klog.Errorf("host-gw: %s routes left from an earlier run are not cleaned up: %v", f.name(), err)
		return
	}
	for _, r := range stale {
		klog.Infof("host-gw: removing stale route %s via %s", r.Dst, r.Gw)
		if err := f.b.nl.RouteDel(&r); err != nil && !backend.IsGone(err) {
			klog.Errorf("host-gw: delete stale route %s via %s: %v", r.Dst, r.Gw, err)
		}
	}
}
