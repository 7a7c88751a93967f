package vxlan

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
)

// reconcile deletes routes, neighbours and FDB entries that look like ours
// but match no current peer: left by an earlier run for leases that expired
// while this node's daemon was down.
func (s *stack) reconcile() {
	keepRoutes := map[netip.Prefix]bool{s.own: true}
	wantNeigh := map[netip.Addr]bool{}
	wantFDB := map[string]bool{}
	for _, p := range s.peers {
		keepRoutes[p.subnet] = true
		if !p.direct {
			wantNeigh[p.subnet.Addr()] = true
			wantFDB[fdbKey(p.mac, p.publicIP)] = true
		}
	}
	s.reconcileRoutes(keepRoutes)
	family := netlink.FAMILY_V4
	if s.v6 {
		family = netlink.FAMILY_V6
	}
	s.reconcileNeighbours(family, "neighbour", func(ne netlink.Neigh) bool {
		a, ok := netip.AddrFromSlice(ne.IP)
		return ok && wantNeigh[a.Unmap()]
	})
	s.reconcileNeighbours(unix.AF_BRIDGE, "fdb entry", func(ne netlink.Neigh) bool {
		a, _ := netip.AddrFromSlice(ne.IP)
		return wantFDB[fdbKey(ne.HardwareAddr.String(), a.Unmap())]
	})
}

// fdbKey identifies an FDB entry: the same MAC towards an old address is
// stale too.
func fdbKey(mac string, dst netip.Addr) string { return mac + " " + dst.String() }

func (s *stack) reconcileRoutes(keep map[netip.Prefix]bool) {
	stale, err := backend.StaleRoutes(s.b.nl, []int{s.dev.Index, s.b.ext.Iface.Index}, s.network, keep)
	if err != nil {
		klog.Errorf("vxlan: %s routes left from an earlier run are not cleaned up: %v", s.family(), err)
		return
	}
	for _, r := range stale {
		klog.Infof("vxlan: removing stale route %s via %s", r.Dst, r.Gw)
		s.logGone("route", r.Dst.String(), s.b.nl.RouteDel(&r))
	}
}

func (s *stack) reconcileNeighbours(family int, what string, wanted func(netlink.Neigh) bool) {
	neighs, err := s.b.nl.NeighList(s.dev.Index, family)
	if err != nil {
		klog.Errorf("vxlan: list neighbours of %s for reconciliation: %v", s.dev.Name, err)
		return
	}
	for _, ne := range neighs {
		if ne.LinkIndex != s.dev.Index || ne.State&netlink.NUD_PERMANENT == 0 || wanted(ne) || isZeroMAC(ne.HardwareAddr) {
			continue
		}
		klog.Infof("vxlan: removing stale %s %s lladdr %s on %s", what, ne.IP, ne.HardwareAddr, s.dev.Name)
		s.logGone(what, ne.IP.String(), s.b.nl.NeighDel(&ne))
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
