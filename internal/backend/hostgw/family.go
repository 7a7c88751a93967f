package hostgw

import (
	"fmt"
	"net/netip"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
)

// family is one address family's routes. The IPv4 half reads a lease's
// Subnet and PublicIP, the IPv6 half IPv6Subnet and PublicIPv6.
type family struct {
	b       *Backend
	v6      bool
	network netip.Prefix // the cluster network of this family
	local   netip.Addr   // this node's address on the external interface

	// peers is the desired state by lease key; routes its kernel writer.
	peers  *backend.PeerSet[backend.PeerRoute]
	table  *backend.RouteTable[backend.PeerRoute]
	routes *backend.Routes
	// offSegment holds, by destination, the next hop a peer was last
	// reported unreachable at, so that the error is logged once per peer
	// and address rather than on every reconcile.
	offSegment map[netip.Prefix]netip.Addr
}

func newFamily(b *Backend, v6 bool, network netip.Prefix, local netip.Addr) *family {
	f := &family{b: b, v6: v6, network: network, local: local, offSegment: map[netip.Prefix]netip.Addr{}}
	f.routes = backend.NewRoutes(backend.NetlinkRoutes{H: b.nl}, network, map[int]string{b.ext.Iface.Index: b.ext.Iface.Name})
	f.table = backend.NewRouteTable(func(r backend.PeerRoute) (backend.PeerRoute, bool) { return r, true }, segmentWriter{f.routes, f})
	f.peers = backend.NewPeerSet("host-gw", f.table)
	return f
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

// subnetOf is the lease's subnet of this family.
func (f *family) subnetOf(l *lease.Lease) netip.Prefix {
	if f.v6 {
		return l.IPv6Subnet
	}
	return l.Subnet
}

func (f *family) routeFor(l *lease.Lease) (backend.PeerRoute, error) {
	if l.Attrs.BackendType != TypeName {
		return backend.PeerRoute{}, fmt.Errorf("it uses backend %q; every node of a network must use the same backend", l.Attrs.BackendType)
	}
	subnet, gw := l.Subnet, l.Attrs.PublicIP.Unmap()
	if f.v6 {
		subnet, gw = l.IPv6Subnet, l.Attrs.PublicIPv6
	}
	if !subnet.IsValid() || !gw.IsValid() || gw.Is6() != f.v6 {
		return backend.PeerRoute{}, fmt.Errorf("lease has no %s subnet or %s; a dual-stack network needs both on every node", f.name(), f.publicField())
	}
	return backend.PeerRoute{Dst: subnet, Gw: gw, Link: f.b.ext.Iface.Index}, nil
}

func (f *family) handle(ev lease.Event) {
	if ev.Type == lease.Removed {
		delete(f.offSegment, f.subnetOf(&ev.Lease))
	}
	f.peers.Handle(ev, f.routeFor)
}

// segmentWriter installs a peer's route only when its next hop is on this
// node's segment; otherwise it takes out what an earlier form of the route
// left there and tells the operator.
type segmentWriter struct {
	*backend.Routes
	f *family
}

func (w segmentWriter) Set(dst netip.Prefix, h backend.Hop) error {
	if err := backend.CheckOnSegment(w.f.b.nl, w.f.b.ext.Iface.Index, h.Gw); err != nil {
		// A route already installed for this peer, through whatever next
		// hop, now leads nowhere.
		if derr := w.Delete(dst, backend.Hop{Link: h.Link}); derr != nil {
			klog.Errorf("host-gw: delete route %s: %v", w.Describe(dst, h), derr)
		}
		w.f.reportOffSegment(dst, h.Gw, err)
		return fmt.Errorf("%w: %v", backend.ErrUnroutable, err)
	}
	delete(w.f.offSegment, dst)
	return w.Routes.Set(dst, h)
}

// reportOffSegment tells the operator, once per peer and address, why the
// peer gets no route and what to do about it.
func (f *family) reportOffSegment(dst netip.Prefix, gw netip.Addr, why error) {
	if last, seen := f.offSegment[dst]; seen && last == gw {
		return
	}
	f.offSegment[dst] = gw
	klog.Errorf("host-gw: peer %s (%s %s) is not on this node's L2 segment (this node is %s on %s): %v. "+
		"No route is installed for it, since one would black-hole its pods' traffic. "+
		"host-gw needs all nodes on one L2 segment; use the vxlan backend, or vxlan with \"DirectRouting\": true "+
		"to keep plain routes between nodes that share a segment",
		dst, f.publicField(), gw, f.local, f.b.ext.Iface.Name, why)
}
