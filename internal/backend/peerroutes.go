package backend

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
)

// PeerRoute is the kernel route one peer lease asks for:
// "<Dst> via <Gw> dev <Link>", onlink on a tunnel device whose next hop is
// no neighbour. Comparable, so a change is detected with ==.
type PeerRoute struct {
	Dst    netip.Prefix
	Gw     netip.Addr
	Link   int
	Onlink bool
}

func (r PeerRoute) String() string { return fmt.Sprintf("%s via %s", r.Dst, r.Gw) }

// Netlink is r as netlink writes it.
func (r PeerRoute) Netlink() *netlink.Route {
	nr := &netlink.Route{Dst: ipnet.FromPrefix(r.Dst), Gw: net.IP(r.Gw.AsSlice()), LinkIndex: r.Link}
	if r.Onlink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// Hop is how a route reaches its destination: what the Table of routes
// keeps per destination (a whole PeerRoute there cost 40 bytes more per
// peer, about 0.6 MiB at 10000 peers).
type Hop struct {
	Gw     netip.Addr
	Link   int32
	Onlink bool
}

// Hop is r's next hop.
func (r PeerRoute) Hop() Hop { return Hop{Gw: r.Gw, Link: int32(r.Link), Onlink: r.Onlink} }

// To is the route to dst through h.
func (h Hop) To(dst netip.Prefix) PeerRoute {
	return PeerRoute{Dst: dst, Gw: h.Gw, Link: int(h.Link), Onlink: h.Onlink}
}

// RouteKernel is the routing table as Routes writes it, passed in so that
// tests run without root. NetlinkRoutes is the real one.
type RouteKernel interface {
	Replace(r *netlink.Route) error
	// Delete removes r; a route already gone is no error.
	Delete(r *netlink.Route) error
	// Visit calls f for every route of family on link as the dump
	// arrives; f returns false to stop.
	Visit(family, link int, f func(netlink.Route) bool) error
}

// NetlinkRoutes is a RouteKernel on a netlink handle.
type NetlinkRoutes struct{ H *netlink.Handle }

// Replace is `ip route replace`.
func (w NetlinkRoutes) Replace(r *netlink.Route) error { return w.H.RouteReplace(r) }

// Delete is `ip route del`.
func (w NetlinkRoutes) Delete(r *netlink.Route) error {
	if err := w.H.RouteDel(r); err != nil && !IsGone(err) {
		return err
	}
	return nil
}

// Visit reads the routes on link.
func (w NetlinkRoutes) Visit(family, link int, f func(netlink.Route) bool) error {
	return w.H.RouteListFilteredIter(family, &netlink.Route{LinkIndex: link}, netlink.RT_FILTER_OIF, f)
}

// Routes is the EntryWriter of peer routes into one cluster network (one
// address family): a peer's route is replaced in place, and the routes
// read back are those on the devices peer routes go out of.
type Routes struct {
	kernel  RouteKernel
	network netip.Prefix
	family  int
	own     netip.Prefix
	links   map[int]string
}

// NewRoutes writes routes into network through kernel; links names, by
// index, the devices peer routes go out of: a reconcile reads them, and
// prunes flannel-shaped routes on them that no peer wants.
func NewRoutes(kernel RouteKernel, network netip.Prefix, links map[int]string) *Routes {
	return &Routes{kernel: kernel, network: network, family: familyOf(network.Addr()), links: links}
}

// SetOwn records this node's subnet: a route into it is never stale.
// Call it under the backend's lock.
func (w *Routes) SetOwn(own netip.Prefix) { w.own = own.Masked() }

// Relink replaces device index old by new (the device was re-created).
// Call it under the backend's lock.
func (w *Routes) Relink(old, new int) {
	if name, ok := w.links[old]; ok && old != new {
		delete(w.links, old)
		w.links[new] = name
	}
}

// Set is `ip route replace`.
func (w *Routes) Set(dst netip.Prefix, h Hop) error { return w.kernel.Replace(h.To(dst).Netlink()) }

// Delete is `ip route del`.
func (w *Routes) Delete(dst netip.Prefix, h Hop) error { return w.kernel.Delete(h.To(dst).Netlink()) }

// Same compares device and next hop: a route is in place when the kernel
// sends the destination through the wanted device to the wanted gateway.
func (w *Routes) Same(want, have Hop) bool { return want.Link == have.Link && want.Gw == have.Gw }

// Describe is the route in `ip route` syntax.
func (w *Routes) Describe(dst netip.Prefix, h Hop) string {
	s := fmt.Sprintf("%s via %s dev %s", dst, h.Gw, w.linkName(int(h.Link)))
	if h.Onlink {
		s += " onlink"
	}
	return s
}

func (w *Routes) linkName(index int) string {
	if name, ok := w.links[index]; ok {
		return name
	}
	return fmt.Sprintf("#%d", index)
}

// Visit reads the routes on the links once, as the dump arrives: with
// thousands of peers, a listing of every route would be the daemon's
// largest allocation.
func (w *Routes) Visit(reset func(), f func(netip.Prefix, Hop, bool)) error {
	return nldump.Visit(reset, func() error {
		for link := range w.links {
			err := w.kernel.Visit(w.family, link, func(k netlink.Route) bool {
				if dst, ok := ipnet.Prefix(k.Dst); ok {
					f(dst, hopOf(k), w.ours(k))
				}
				return true
			})
			if err != nil {
				return fmt.Errorf("list routes on %s: %w", w.linkName(link), err)
			}
		}
		return nil
	})
}

// ours says whether a kernel route is one flannel installs for a peer in
// the network, and not the route into this node's own subnet.
func (w *Routes) ours(k netlink.Route) bool {
	dst, shaped := FlannelShaped(k, w.network)
	return shaped && dst.Masked() != w.own
}

func hopOf(k netlink.Route) Hop {
	gw, _ := netip.AddrFromSlice(k.Gw)
	return Hop{Gw: gw.Unmap(), Link: int32(k.LinkIndex), Onlink: k.Flags&int(netlink.FLAG_ONLINK) != 0}
}

// RouteTable is the Table of peer routes, keyed by destination.
type RouteTable[P any] = Table[P, netip.Prefix, Hop]

// NewRouteTable returns the Table of the routes of derives from a peer
// (false: this peer wants none), written by w.
func NewRouteTable[P any](of func(P) (PeerRoute, bool), w EntryWriter[netip.Prefix, Hop]) *RouteTable[P] {
	return NewTable("route", func(p P) (netip.Prefix, Hop, bool) {
		r, ok := of(p)
		return r.Dst, r.Hop(), ok
	}, w)
}

// RouteInLine says whether a route notification leaves the main table as
// t wants it: a route added in the form a peer wants, or one deleted that
// no peer wants in that form (typically the echo of the engine's own
// write). Anything else is drift for the healer.
func RouteInLine[P any](t *RouteTable[P], u netlink.RouteUpdate) bool {
	dst, ok := ipnet.Prefix(u.Dst)
	if !ok || u.Table != unix.RT_TABLE_MAIN {
		return false
	}
	return t.InLine(dst, hopOf(u.Route), u.Type == unix.RTM_DELROUTE)
}
