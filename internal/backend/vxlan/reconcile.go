package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/nldump"
)

// desiredState is the kernel state all current peers together ask for,
// keyed the way the kernel keys it. Two leases can want the same key (twin
// leases sharing one VtepMAC and PublicIP share an FDB entry); the object
// exists as long as one of them does, and the last programmed wins a
// disagreement.
type desiredState struct {
	routes map[netip.Prefix]route // by destination
	neigh  map[netip.Addr]vtepMAC // VTEP address -> MAC
	fdb    map[vtepMAC]netip.Addr // MAC -> remote public address
}

// desired is the state the peers ask for, kept up to date by set and
// release. Read it only under the network's lock, which every writer holds.
func (s *stack) desired() desiredState { return s.want.d }

// repair makes the kernel hold everything the current peers need: the
// device (re-created with its old MAC, so peers' FDB entries for this node
// stay valid), its address and up state, and each peer's route, neighbour
// and FDB entry. With prune it also removes flannel-shaped state no peer
// accounts for. Repairs are counted in r by kind.
func (s *stack) repair(r backend.Repairs, prune bool) error {
	if err := s.repairDevice(r); err != nil {
		return err
	}
	s.redirect()
	d := s.desired()
	return errors.Join(s.syncRoutes(d, r, prune), s.syncNeighbours(d, r, prune), s.syncFDB(d, r, prune))
}

func (s *stack) repairDevice(r backend.Repairs) error {
	vx, err := refresh(s.b.nl, s.spec.name)
	if err != nil || vx.Index != s.dev.Index || !compatible(vx, s.spec) {
		klog.Warningf("vxlan: device %s is gone or was replaced; re-creating it with MAC %s", s.spec.name, s.spec.mac)
		if vx, err = ensureDevice(s.b.nl, s.spec); err != nil {
			return fmt.Errorf("re-create %s: %w", s.spec.name, err)
		}
		r.Add("device")
	}
	s.dev = vx
	if s.spec.mac != nil && vx.HardwareAddr.String() != s.spec.mac.String() {
		if err := s.b.nl.LinkSetHardwareAddr(vx, s.spec.mac); err != nil {
			return fmt.Errorf("restore MAC %s of %s (peers' FDB entries point to it): %w", s.spec.mac, vx.Name, err)
		}
		r.Add("device")
	}
	if vx.MTU != s.spec.mtu {
		if err := s.b.nl.LinkSetMTU(vx, s.spec.mtu); err != nil {
			return fmt.Errorf("restore MTU %d of %s: %w", s.spec.mtu, vx.Name, err)
		}
		r.Add("device")
	}
	if !s.own.IsValid() {
		return nil // not activated yet
	}
	changed, err := ensureOnlyAddress(s.b.nl, vx, netip.PrefixFrom(s.own.Addr(), s.own.Addr().BitLen()))
	if err != nil {
		return err
	}
	if changed {
		r.Add("address")
	}
	if vx.Flags&net.FlagUp == 0 {
		if err := s.b.nl.LinkSetUp(vx); err != nil {
			return fmt.Errorf("bring up %s: %w", vx.Name, err)
		}
		r.Add("device")
	}
	return nil
}

// redirect re-checks, with DirectRouting, which peers share this node's
// segment: an interface flap or a re-addressed underlay moves a peer
// between a plain route and the overlay.
func (s *stack) redirect() {
	if !s.b.opts.DirectRouting {
		return
	}
	for key, p := range s.peers {
		direct := backend.CheckOnSegment(s.b.nl, s.b.ext.Iface.Index, p.publicIP) == nil
		if direct == p.direct {
			continue
		}
		q := p
		q.direct = direct
		s.set(key, q)
		if err := s.program(q); err != nil {
			klog.Errorf("vxlan: program %s peer %s: %v (retrying with back-off)", s.family(), q, err)
			s.failed = true
		}
		s.release(p)
		klog.Infof("vxlan: re-programmed %s peer %s (was %s)", s.family(), q, p)
	}
}

// syncRoutes reads the routes on the VXLAN device and the external
// interface once, as the dump arrives, restores every wanted route that is
// missing or different, and with prune deletes flannel-shaped routes into
// the network that no peer wants (left by an earlier run for leases that
// expired meanwhile, or added by hand). r nil: prune only.
func (s *stack) syncRoutes(d desiredState, r backend.Repairs, prune bool) error {
	in := make(map[netip.Prefix]bool, len(d.routes)) // destinations whose route is as wanted
	var stale []netlink.Route
	visit := func(rt netlink.Route) bool {
		dst, ok := backend.PrefixOf(rt.Dst)
		if !ok {
			return true
		}
		want, wanted := d.routes[dst]
		if wanted && s.routeMatches(rt, want) {
			in[dst] = true
		} else if _, shaped := backend.FlannelShaped(rt, s.network); prune && shaped && !wanted && dst.Masked() != s.own {
			stale = append(stale, rt)
		}
		return true
	}
	err := nldump.Visit(func() { clear(in); stale = stale[:0] }, func() error {
		for _, link := range []int{s.dev.Index, s.b.ext.Iface.Index} {
			if err := s.b.nl.RouteListFilteredIter(s.netlinkFamily(), &netlink.Route{LinkIndex: link}, netlink.RT_FILTER_OIF, visit); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, rt := range stale {
		klog.Infof("vxlan: removing stale route %s via %s", rt.Dst, rt.Gw)
		s.logGone("route", rt.Dst.String(), s.b.nl.RouteDel(&rt))
	}
	if r == nil {
		return nil
	}
	var errs []error
	for dst, rt := range d.routes {
		if in[dst] {
			continue
		}
		if err := s.b.nl.RouteReplace(s.routeTo(dst, rt)); err != nil {
			errs = append(errs, fmt.Errorf("restore route %s %s: %w", dst, rt, err))
			continue
		}
		klog.Infof("vxlan: restored route for %s peer %s %s", s.family(), dst, rt)
		r.Add("route")
	}
	return errors.Join(errs...)
}

// routeMatches says whether a kernel route has the device and gateway
// of the wanted form.
func (s *stack) routeMatches(rt netlink.Route, want route) bool {
	link := s.dev.Index
	if want.direct {
		link = s.b.ext.Iface.Index
	}
	gw, ok := netip.AddrFromSlice(rt.Gw)
	return ok && rt.LinkIndex == link && gw.Unmap() == want.gw
}

// syncNeighbours reads the device's neighbour entries once, as the dump
// arrives, and restores every wanted entry that is missing or points to
// another MAC; with prune it first deletes the permanent entries no peer
// wants. r nil: prune only (right after the first batch programmed every
// peer), which deletes a wanted address's entry with another MAC too.
func (s *stack) syncNeighbours(d desiredState, r backend.Repairs, prune bool) error {
	seen := make(map[netip.Addr]bool, len(d.neigh))
	var stale []netlink.Neigh
	err := backend.EachNeigh(s.b.ns, s.dev.Index, s.netlinkFamily(), func() { clear(seen); stale = stale[:0] }, func(ne netlink.Neigh) {
		a, ok := netip.AddrFromSlice(ne.IP)
		mac, isMAC := macOf(ne.HardwareAddr)
		if !ok || ne.State&netlink.NUD_PERMANENT == 0 {
			return
		}
		want, wanted := d.neigh[a.Unmap()]
		switch {
		case wanted && isMAC && want == mac:
			seen[a.Unmap()] = true
		case wanted && r != nil: // restored below
		case prune && !isZeroMAC(ne.HardwareAddr):
			stale = append(stale, detach(ne))
		}
	})
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", s.dev.Name, err)
	}
	s.deleteStale("neighbour", stale)
	if r == nil {
		return nil
	}
	var errs []error
	for ip, mac := range d.neigh {
		if seen[ip] {
			continue
		}
		if err := s.b.nl.NeighSet(s.arp(ip, mac)); err != nil {
			errs = append(errs, fmt.Errorf("restore neighbour %s lladdr %s dev %s: %w", ip, mac, s.dev.Name, err))
			continue
		}
		klog.Infof("vxlan: restored neighbour %s lladdr %s dev %s", ip, mac, s.dev.Name)
		r.Add("neighbour")
	}
	return errors.Join(errs...)
}

// syncFDB does the same for the FDB: an entry is wanted when a peer wants
// its MAC towards its address; the same MAC towards an old address is
// stale.
func (s *stack) syncFDB(d desiredState, r backend.Repairs, prune bool) error {
	seen := make(map[vtepMAC]bool, len(d.fdb))
	var stale []netlink.Neigh
	err := backend.EachNeigh(s.b.ns, s.dev.Index, unix.AF_BRIDGE, func() { clear(seen); stale = stale[:0] }, func(ne netlink.Neigh) {
		a, ok := netip.AddrFromSlice(ne.IP)
		mac, isMAC := macOf(ne.HardwareAddr)
		if !ok || !isMAC {
			return
		}
		if dst, wanted := d.fdb[mac]; wanted && dst == a.Unmap() {
			seen[mac] = true
		} else if prune && ne.State&netlink.NUD_PERMANENT != 0 && !isZeroMAC(ne.HardwareAddr) {
			stale = append(stale, detach(ne))
		}
	})
	if err != nil {
		return fmt.Errorf("list FDB of %s: %w", s.dev.Name, err)
	}
	s.deleteStale("fdb entry", stale)
	if r == nil {
		return nil
	}
	var errs []error
	for mac, dst := range d.fdb {
		if seen[mac] {
			continue
		}
		if err := s.b.nl.NeighSet(s.fdb(mac, dst)); err != nil {
			errs = append(errs, fmt.Errorf("restore fdb %s dst %s dev %s: %w", mac, dst, s.dev.Name, err))
			continue
		}
		klog.Infof("vxlan: restored fdb %s dst %s dev %s", mac, dst, s.dev.Name)
		r.Add("fdb")
	}
	return errors.Join(errs...)
}

// detach copies the parts of a dumped entry that point into the receive
// buffer.
func detach(ne netlink.Neigh) netlink.Neigh {
	ne.IP = slices.Clone(ne.IP)
	ne.HardwareAddr = slices.Clone(ne.HardwareAddr)
	return ne
}

func (s *stack) deleteStale(what string, stale []netlink.Neigh) {
	for _, ne := range stale {
		klog.Infof("vxlan: removing stale %s %s lladdr %s on %s", what, ne.IP, ne.HardwareAddr, s.dev.Name)
		s.logGone(what, ne.IP.String(), s.b.nl.NeighDel(&ne))
	}
}

func (s *stack) netlinkFamily() int {
	if s.v6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// prune deletes routes, neighbours and FDB entries that look like ours
// but match no current peer: left by an earlier run for leases that
// expired while this node's daemon was down, or added by hand.
func (s *stack) prune(d desiredState) {
	for _, sync := range []func(desiredState, backend.Repairs, bool) error{s.syncRoutes, s.syncNeighbours, s.syncFDB} {
		if err := sync(d, nil, true); err != nil {
			klog.Errorf("vxlan: %s state no lease accounts for is not cleaned up: %v", s.family(), err)
		}
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
