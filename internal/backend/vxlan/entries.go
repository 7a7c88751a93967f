package vxlan

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/backend"
)

// neighbours is the EntryWriter of a stack's permanent neighbour (ARP or
// NDP) entries on its device: a peer's VTEP address to its VTEP MAC.
type neighbours struct{ s *stack }

func (w neighbours) Set(ip netip.Addr, mac vtepMAC) error { return w.s.b.nl.NeighSet(w.s.arp(ip, mac)) }

func (w neighbours) Delete(ip netip.Addr, mac vtepMAC) error {
	return gone(w.s.b.nl.NeighDel(w.s.arp(ip, mac)))
}

func (w neighbours) Same(want, have vtepMAC) bool { return want == have }

func (w neighbours) Describe(ip netip.Addr, mac vtepMAC) string {
	return fmt.Sprintf("%s lladdr %s dev %s", ip, mac, w.s.dev.Name)
}

// Visit reads the device's permanent entries, as the dump arrives; one
// with a MAC is flannel's shape.
func (w neighbours) Visit(reset func(), f func(netip.Addr, vtepMAC, bool)) error {
	s := w.s
	return backend.EachNeigh(s.b.ns, s.dev.Index, s.netlinkFamily(), reset, func(ne netlink.Neigh) {
		a, ok := netip.AddrFromSlice(ne.IP)
		mac, isMAC := macOf(ne.HardwareAddr)
		if ok && isMAC && ne.State&netlink.NUD_PERMANENT != 0 {
			f(a.Unmap(), mac, mac != vtepMAC{})
		}
	})
}

// fdbEntries is the EntryWriter of a stack's FDB: a peer's VTEP MAC to
// its public address.
type fdbEntries struct{ s *stack }

func (w fdbEntries) Set(mac vtepMAC, dst netip.Addr) error {
	return w.s.b.nl.NeighSet(w.s.fdb(mac, dst))
}

func (w fdbEntries) Delete(mac vtepMAC, dst netip.Addr) error {
	return gone(w.s.b.nl.NeighDel(w.s.fdb(mac, dst)))
}

func (w fdbEntries) Same(want, have netip.Addr) bool { return want == have }

func (w fdbEntries) Describe(mac vtepMAC, dst netip.Addr) string {
	return fmt.Sprintf("%s dst %s dev %s self permanent", mac, dst, w.s.dev.Name)
}

// Visit reads the device's FDB, as the dump arrives; a permanent entry
// with a MAC is flannel's shape.
func (w fdbEntries) Visit(reset func(), f func(vtepMAC, netip.Addr, bool)) error {
	s := w.s
	return backend.EachNeigh(s.b.ns, s.dev.Index, unix.AF_BRIDGE, reset, func(ne netlink.Neigh) {
		a, ok := netip.AddrFromSlice(ne.IP)
		mac, isMAC := macOf(ne.HardwareAddr)
		if ok && isMAC {
			f(mac, a.Unmap(), ne.State&netlink.NUD_PERMANENT != 0 && mac != vtepMAC{})
		}
	})
}

func gone(err error) error {
	if err != nil && !backend.IsGone(err) {
		return err
	}
	return nil
}

// arp is the permanent neighbour entry of a peer's VTEP address.
func (s *stack) arp(vtep netip.Addr, mac vtepMAC) *netlink.Neigh {
	hw := net.HardwareAddr(mac[:])
	return &netlink.Neigh{LinkIndex: s.dev.Index, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: net.IP(vtep.AsSlice()), HardwareAddr: hw}
}

// fdb is the FDB entry sending frames for a VTEP's MAC to its public address.
func (s *stack) fdb(mac vtepMAC, dst netip.Addr) *netlink.Neigh {
	hw := net.HardwareAddr(mac[:])
	return &netlink.Neigh{LinkIndex: s.dev.Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: net.IP(dst.AsSlice()), HardwareAddr: hw}
}

// neighInLine says whether a neighbour or FDB notification on the device
// leaves it as the peers want it: added as wanted, permanent; deleted in
// a form no peer wants; or a passing non-permanent entry for a key no
// peer wants (the kernel reports a deleted neighbour as FAILED first),
// which the reconcile leaves alone as well.
func (s *stack) neighInLine(u netlink.NeighUpdate) bool {
	ip, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	mac, _ := macOf(u.HardwareAddr)
	deleted, permanent := u.Type == unix.RTM_DELNEIGH, u.State&netlink.NUD_PERMANENT != 0
	if u.Family == unix.AF_BRIDGE {
		return entryInLine(s.fdbT, mac, ip, deleted, permanent)
	}
	return entryInLine(s.neighT, ip, mac, deleted, permanent)
}

func entryInLine[K, V comparable](t *backend.Table[peer, K, V], k K, v V, deleted, permanent bool) bool {
	switch {
	case deleted:
		return t.InLine(k, v, true)
	case !permanent:
		return !t.Wants(k)
	}
	return t.InLine(k, v, false)
}
