package backend

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/nldump"
)

// StaleRoutes lists the routes a flannel backend would have installed on
// the given links that no current peer accounts for: main table, protocol
// "boot" (what netlink writes by default, and what upstream flanneld
// writes), a gateway, and a destination inside network that keep does not
// hold. Routes of other protocols (a routing daemon's, DHCP's) are never
// reported, so an operator's own routes into the pod range survive.
func StaleRoutes(h *netlink.Handle, links []int, network netip.Prefix, keep map[netip.Prefix]bool) ([]netlink.Route, error) {
	if !network.IsValid() {
		return nil, nil
	}
	family := netlink.FAMILY_V4
	if network.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	var stale []netlink.Route
	for _, link := range links {
		// Visited one by one as the dump arrives: with thousands of peers,
		// a listing of every route would be the daemon's largest allocation.
		mark := len(stale)
		err := nldump.Visit(func() { stale = stale[:mark] }, func() error {
			return h.RouteListFilteredIter(family, &netlink.Route{LinkIndex: link}, netlink.RT_FILTER_OIF, func(r netlink.Route) bool {
				if dst, ok := FlannelShaped(r, network); ok && !keep[dst.Masked()] {
					stale = append(stale, r)
				}
				return true
			})
		})
		if err != nil {
			return nil, fmt.Errorf("list routes on %s: %w", linkName(h, link), err)
		}
	}
	return stale, nil
}

// FlannelShaped says whether r looks like a route a flannel backend
// installs for a peer in network (see StaleRoutes), and returns its
// destination.
func FlannelShaped(r netlink.Route, network netip.Prefix) (netip.Prefix, bool) {
	dst, ok := PrefixOf(r.Dst)
	return dst, ok && r.Gw != nil && r.Protocol == unix.RTPROT_BOOT && within(dst, network)
}

// within says whether p is network itself or a part of it.
func within(p, network netip.Prefix) bool {
	return p.Bits() >= network.Bits() && network.Masked().Contains(p.Addr())
}

// IsGone says whether a delete failed only because the object was already
// absent, which callers treat as success.
func IsGone(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT)
}
