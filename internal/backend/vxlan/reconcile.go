package vxlan

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// reconcile deletes routes, neighbours and FDB entries that look like ours
// but match no current peer: left by an earlier run for leases that expired
// while this node's daemon was down.
func (n *network) reconcile() {
	wantRoutes := map[netip.Prefix]bool{}
	wantNeigh := map[netip.Addr]bool{}
	wantFDB := map[string]bool{}
	for _, p := range n.peers {
		wantRoutes[p.subnet] = true
		if !p.direct {
			wantNeigh[p.subnet.Addr()] = true
			wantFDB[p.mac] = true
		}
	}
	n.reconcileRoutes(wantRoutes)
	n.reconcileNeighbours(netlink.FAMILY_V4, func(ne netlink.Neigh) bool {
		a, ok := netip.AddrFromSlice(ne.IP)
		return ok && wantNeigh[a.Unmap()]
	})
	n.reconcileNeighbours(unix.AF_BRIDGE, func(ne netlink.Neigh) bool {
		return wantFDB[ne.HardwareAddr.String()]
	})
}

func (n *network) reconcileRoutes(want map[netip.Prefix]bool) {
	for _, link := range []int{n.dev.Index, n.b.ext.Iface.Index} {
		routes, err := n.b.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link}, netlink.RT_FILTER_OIF)
		if err != nil {
			klog.Errorf("vxlan: list routes for reconciliation: %v", err)
			return
		}
		for _, r := range routes {
			dst, ok := prefixOf(r.Dst)
			if !ok || r.Gw == nil || want[dst] || dst == n.own || !n.cfg.Network.Contains(dst.Addr()) {
				continue
			}
			klog.Infof("vxlan: removing stale route %s via %s", dst, r.Gw)
			logGone("route", dst.String(), n.b.nl.RouteDel(&r))
		}
	}
}

func (n *network) reconcileNeighbours(family int, wanted func(netlink.Neigh) bool) {
	neighs, err := n.b.nl.NeighList(n.dev.Index, family)
	if err != nil {
		klog.Errorf("vxlan: list neighbours for reconciliation: %v", err)
		return
	}
	for _, ne := range neighs {
		if ne.LinkIndex != n.dev.Index || ne.State&netlink.NUD_PERMANENT == 0 || wanted(ne) || isZeroMAC(ne.HardwareAddr) {
			continue
		}
		klog.Infof("vxlan: removing stale neighbour %s lladdr %s", ne.IP, ne.HardwareAddr)
		logGone("neighbour", ne.IP.String(), n.b.nl.NeighDel(&ne))
	}
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}
