package vxlan

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
)

// stack is one address family's half of the network: its device and the
// peers programmed on it. The IPv4 half reads a lease's Subnet, PublicIP
// and BackendData, the IPv6 half IPv6Subnet, PublicIPv6 and BackendV6Data.
type stack struct {
	b       *Backend
	v6      bool
	dev     *netlink.Vxlan
	mtu     int
	network netip.Prefix // the cluster network of this family
	own     netip.Prefix
	spec    deviceSpec // to re-create the device, with its MAC, if it vanishes
	// peers holds, by lease key, what each current lease asks for: the
	// desired state, whether or not writing it to the kernel worked.
	peers map[string]peer
	seq   uint64 // the last peer's seq
	// want is what the peers ask of the kernel, kept in step with peers.
	want *wanted
	// failed is set when a kernel write failed; the network then asks its
	// reconciler to retry at once instead of waiting for the next event.
	failed bool
	// log is where a peer's change goes: level 0, or -v=2 inside a big
	// batch (start-up, re-list), which gets one summary line instead.
	log klog.Verbose
}

func (s *stack) family() string {
	if s.v6 {
		return "IPv6"
	}
	return "IPv4"
}

func (s *stack) leaseData() json.RawMessage {
	data, _ := json.Marshal(leaseData{VNI: s.b.opts.VNI, VtepMAC: s.dev.HardwareAddr.String()})
	return data
}

func (s *stack) activate(own *lease.Lease) error {
	subnet := own.Subnet
	if s.v6 {
		subnet = own.IPv6Subnet
	}
	if !subnet.IsValid() {
		return fmt.Errorf("own lease %s has no %s subnet although the network enables %s", own.Key(), s.family(), s.family())
	}
	s.own = subnet
	if _, err := ensureOnlyAddress(s.b.nl, s.dev, netip.PrefixFrom(subnet.Addr(), subnet.Addr().BitLen())); err != nil {
		return err
	}
	if err := s.b.nl.LinkSetUp(s.dev); err != nil {
		return fmt.Errorf("bring up %s: %w", s.dev.Name, err)
	}
	return nil
}

// peer is what is programmed for one remote lease.
type peer struct {
	subnet   netip.Prefix
	publicIP netip.Addr
	mac      vtepMAC
	direct   bool // plain route via publicIP (DirectRouting, same segment)
	// seq says which peer was programmed last (highest), which decides
	// between peers that want the same kernel object in different forms.
	// Kept here rather than in a map of its own: one entry less per peer.
	seq uint64
}

// vtepMAC is a VTEP's Ethernet address, held by value: as a string it cost
// an allocation per peer, and the FDB check a string per kernel entry.
type vtepMAC [6]byte

// macOf converts a kernel or lease address; ok is false unless it is a
// 6-byte Ethernet address (the only kind a VXLAN device has).
func macOf(hw net.HardwareAddr) (m vtepMAC, ok bool) {
	if len(hw) != len(m) {
		return m, false
	}
	copy(m[:], hw)
	return m, true
}

func (m vtepMAC) String() string { return net.HardwareAddr(m[:]).String() }

// sameAs says whether p and q program the same, whenever each was set.
func (p peer) sameAs(q peer) bool {
	p.seq, q.seq = 0, 0
	return p == q
}

func (p peer) String() string {
	if p.direct {
		return fmt.Sprintf("%s via %s (direct)", p.subnet, p.publicIP)
	}
	return fmt.Sprintf("%s via %s (VTEP %s)", p.subnet, p.publicIP, p.mac)
}

// route is the form of a peer's route, which is all the desired state
// keeps per destination (a whole peer there cost 40 bytes more per peer).
// Two peers for one destination install the identical route, replacing one
// by the other leaving nothing of the old to delete, when their forms are
// equal.
type route struct {
	gw     netip.Addr // the peer's VTEP address (its subnet's network address), or with direct its public address
	direct bool
}

func (p peer) route() route {
	if p.direct {
		return route{gw: p.publicIP, direct: true}
	}
	return route{gw: p.subnet.Addr()}
}

func (r route) String() string {
	if r.direct {
		return "via " + r.gw.String() + " (direct)"
	}
	return "via " + r.gw.String() + " onlink"
}

func (s *stack) peerFor(l *lease.Lease) (peer, error) {
	if l.Attrs.BackendType != TypeName {
		return peer{}, fmt.Errorf("it uses backend %q; every node of a network must use the same backend", l.Attrs.BackendType)
	}
	subnet, public, data := l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData
	if s.v6 {
		subnet, public, data = l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data
	}
	public = public.Unmap()
	if !subnet.IsValid() || !public.IsValid() || public.Is6() != s.v6 || len(data) == 0 {
		return peer{}, fmt.Errorf("lease has no %s subnet, public address or backend data; a dual-stack network needs both on every node", s.family())
	}
	hw, err := decodeLeaseData(data)
	if err != nil {
		return peer{}, err
	}
	mac, ok := macOf(hw)
	if !ok {
		return peer{}, fmt.Errorf("VtepMAC %s is not a 6-byte Ethernet address", hw)
	}
	p := peer{subnet: subnet, publicIP: public, mac: mac}
	if s.b.opts.DirectRouting {
		err := backend.CheckOnSegment(s.b.nl, s.b.ext.Iface.Index, public)
		p.direct = err == nil
		if err != nil {
			klog.V(1).Infof("vxlan: peer %s is not on this node's segment (%v); it is reached through %s", subnet, err, s.dev.Name)
		}
	}
	return p, nil
}

func (s *stack) routeFor(p peer) *netlink.Route { return s.routeTo(p.subnet, p.route()) }

func (s *stack) routeTo(dst netip.Prefix, r route) *netlink.Route {
	if r.direct {
		return &netlink.Route{Dst: backend.IPNet(dst), Gw: net.IP(r.gw.AsSlice()), LinkIndex: s.b.ext.Iface.Index}
	}
	return &netlink.Route{Dst: backend.IPNet(dst), Gw: net.IP(r.gw.AsSlice()), LinkIndex: s.dev.Index, Flags: int(netlink.FLAG_ONLINK)}
}

func (s *stack) arpFor(p peer) *netlink.Neigh { return s.arp(p.subnet.Addr(), p.mac) }

// arp is the permanent neighbour entry of a peer's VTEP address.
func (s *stack) arp(vtep netip.Addr, mac vtepMAC) *netlink.Neigh {
	hw := net.HardwareAddr(mac[:])
	return &netlink.Neigh{LinkIndex: s.dev.Index, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: net.IP(vtep.AsSlice()), HardwareAddr: hw}
}

func (s *stack) fdbFor(p peer) *netlink.Neigh { return s.fdb(p.mac, p.publicIP) }

// fdb is the FDB entry sending frames for a VTEP's MAC to its public address.
func (s *stack) fdb(mac vtepMAC, dst netip.Addr) *netlink.Neigh {
	hw := net.HardwareAddr(mac[:])
	return &netlink.Neigh{LinkIndex: s.dev.Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: net.IP(dst.AsSlice()), HardwareAddr: hw}
}

// handle applies one event. A changed peer is programmed anew first and
// only then are the leftovers of its old form released, so its traffic is
// not dropped while it is re-pointed. A failed write keeps the peer in the
// desired state, to be retried by the reconciler.
func (s *stack) handle(ev lease.Event) {
	key := ev.Lease.Key()
	old, had := s.peers[key]
	if ev.Type == lease.Removed {
		if had {
			s.drop(key)
			s.log.Infof("vxlan: removed %s peer %s", s.family(), old)
		}
		return
	}
	p, err := s.peerFor(&ev.Lease)
	if err != nil {
		klog.Errorf("vxlan: cannot program %s peer %s: %v", s.family(), ev.Lease.String(), err)
		s.drop(key)
		return
	}
	if had && old.sameAs(p) {
		return
	}
	s.set(key, p)
	if err := s.program(p); err != nil {
		klog.Errorf("vxlan: program %s peer %s: %v (retrying with back-off)", s.family(), p, err)
		s.failed = true
	}
	if !had {
		s.log.Infof("vxlan: added %s peer %s", s.family(), p)
		return
	}
	s.release(old)
	s.log.Infof("vxlan: re-programmed %s peer %s (was %s)", s.family(), p, old)
}

// set records p as what key wants now, newer than every other peer.
func (s *stack) set(key string, p peer) {
	s.seq++
	p.seq = s.seq
	s.peers[key] = p
	s.want.add(p)
}

// drop forgets key and removes what it had installed, except what another
// current peer still needs.
func (s *stack) drop(key string) {
	old, had := s.peers[key]
	if !had {
		return
	}
	delete(s.peers, key)
	s.release(old)
}

// program installs neighbour and FDB entries before the route, so the route
// never points at an unresolved next hop.
func (s *stack) program(p peer) error {
	if p.direct {
		if err := s.b.nl.RouteReplace(s.routeFor(p)); err != nil {
			return fmt.Errorf("route %s via %s dev %s: %w", p.subnet, p.publicIP, s.b.ext.Iface.Name, err)
		}
		return nil
	}
	if err := s.b.nl.NeighSet(s.arpFor(p)); err != nil {
		return fmt.Errorf("neighbour %s lladdr %s: %w", p.subnet.Addr(), p.mac, err)
	}
	if err := s.b.nl.NeighSet(s.fdbFor(p)); err != nil {
		return fmt.Errorf("fdb %s dst %s: %w", p.mac, p.publicIP, err)
	}
	if err := s.b.nl.RouteReplace(s.routeFor(p)); err != nil {
		return fmt.Errorf("route %s via %s dev %s onlink: %w", p.subnet, p.subnet.Addr(), s.dev.Name, err)
	}
	return nil
}

// release deletes the kernel objects p installed, except those a current
// peer still needs: two leases may share one FDB entry (same VtepMAC and
// PublicIP) and, in principle, one route or neighbour. Where a remaining
// peer wants the same kernel key in another form, its form is re-asserted.
func (s *stack) release(p peer) {
	s.recompute(p)
	d := s.desired()
	if q, ok := d.routes[p.subnet]; !ok || q != p.route() {
		s.logGone("route", p.subnet.String(), s.b.nl.RouteDel(s.routeFor(p)))
		if ok {
			s.logFailed("route", p.subnet.String()+" "+q.String(), s.b.nl.RouteReplace(s.routeTo(p.subnet, q)))
		}
	}
	if p.direct {
		return
	}
	switch mac, ok := d.neigh[p.subnet.Addr()]; {
	case !ok:
		s.logGone("neighbour", p.subnet.Addr().String(), s.b.nl.NeighDel(s.arpFor(p)))
	case mac != p.mac:
		s.logFailed("neighbour", p.subnet.Addr().String(), s.b.nl.NeighSet(s.arp(p.subnet.Addr(), mac)))
	}
	switch dst, ok := d.fdb[p.mac]; {
	case !ok:
		s.logGone("fdb entry", p.mac.String()+" dst "+p.publicIP.String(), s.b.nl.NeighDel(s.fdbFor(p)))
	case dst != p.publicIP:
		s.logFailed("fdb entry", p.mac.String()+" dst "+dst.String(), s.b.nl.NeighSet(s.fdb(p.mac, dst)))
	}
}

// logGone reports a failed delete unless the object was already gone.
func (s *stack) logGone(what, name string, err error) {
	if err == nil || backend.IsGone(err) {
		return
	}
	klog.Errorf("vxlan: delete %s %s on %s: %v", what, name, s.dev.Name, err)
}

// logFailed reports a failed write and has the reconciler retry it.
func (s *stack) logFailed(what, name string, err error) {
	if err == nil {
		return
	}
	s.failed = true
	klog.Errorf("vxlan: set %s %s on %s: %v (retrying with back-off)", what, name, s.dev.Name, err)
}
