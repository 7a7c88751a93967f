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
	peers   map[string]peer // by lease key: what is programmed now
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
	if err := ensureOnlyAddress(s.b.nl, s.dev, netip.PrefixFrom(subnet.Addr(), subnet.Addr().BitLen())); err != nil {
		return err
	}
	if err := s.b.nl.LinkSetUp(s.dev); err != nil {
		return fmt.Errorf("bring up %s: %w", s.dev.Name, err)
	}
	return nil
}

// peer is what is programmed for one remote lease; comparable, so a changed
// lease is detected with ==.
type peer struct {
	subnet   netip.Prefix
	publicIP netip.Addr
	mac      string
	direct   bool // plain route via publicIP (DirectRouting, same segment)
}

func (p peer) String() string {
	if p.direct {
		return fmt.Sprintf("%s via %s (direct)", p.subnet, p.publicIP)
	}
	return fmt.Sprintf("%s via %s (VTEP %s)", p.subnet, p.publicIP, p.mac)
}

// vtepIP is the peer's device address: its subnet's network address.
func (p peer) vtepIP() net.IP { return net.IP(p.subnet.Addr().AsSlice()) }

// sameRoute says whether p and q install the identical route, so that
// replacing one by the other leaves nothing of the old to delete.
func (p peer) sameRoute(q peer) bool {
	return p.subnet == q.subnet && p.direct == q.direct && (!p.direct || p.publicIP == q.publicIP)
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
	mac, err := decodeLeaseData(data)
	if err != nil {
		return peer{}, err
	}
	p := peer{subnet: subnet, publicIP: public, mac: mac.String()}
	if s.b.opts.DirectRouting {
		err := backend.CheckOnSegment(s.b.nl, s.b.ext.Iface.Index, public)
		p.direct = err == nil
		if err != nil {
			klog.V(1).Infof("vxlan: peer %s is not on this node's segment (%v); it is reached through %s", subnet, err, s.dev.Name)
		}
	}
	return p, nil
}

func (s *stack) routeFor(p peer) *netlink.Route {
	if p.direct {
		return &netlink.Route{Dst: backend.IPNet(p.subnet), Gw: net.IP(p.publicIP.AsSlice()), LinkIndex: s.b.ext.Iface.Index}
	}
	return &netlink.Route{Dst: backend.IPNet(p.subnet), Gw: p.vtepIP(), LinkIndex: s.dev.Index, Flags: int(netlink.FLAG_ONLINK)}
}

func (s *stack) arpFor(p peer) *netlink.Neigh {
	mac, _ := net.ParseMAC(p.mac)
	return &netlink.Neigh{LinkIndex: s.dev.Index, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: p.vtepIP(), HardwareAddr: mac}
}

func (s *stack) fdbFor(p peer) *netlink.Neigh {
	mac, _ := net.ParseMAC(p.mac)
	return &netlink.Neigh{LinkIndex: s.dev.Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: net.IP(p.publicIP.AsSlice()), HardwareAddr: mac}
}

// handle applies one event. A changed peer is programmed anew first and
// only then are the leftovers of its old form removed, so its traffic is
// not dropped while it is re-pointed.
func (s *stack) handle(ev lease.Event) {
	key := ev.Lease.Key()
	old, had := s.peers[key]
	if ev.Type == lease.Removed {
		if had {
			s.remove(old)
			delete(s.peers, key)
			klog.Infof("vxlan: removed %s peer %s", s.family(), old)
		}
		return
	}
	p, err := s.peerFor(&ev.Lease)
	if err != nil {
		klog.Errorf("vxlan: cannot program %s peer %s: %v", s.family(), ev.Lease.String(), err)
		s.forget(key)
		return
	}
	if had && old == p {
		return
	}
	if err := s.program(p); err != nil {
		klog.Errorf("vxlan: program %s peer %s: %v", s.family(), p, err)
		s.forget(key)
		s.remove(p)
		return
	}
	s.peers[key] = p
	if !had {
		klog.Infof("vxlan: added %s peer %s", s.family(), p)
		return
	}
	s.retire(old, p)
	klog.Infof("vxlan: re-programmed %s peer %s (was %s)", s.family(), p, old)
}

// forget removes whatever was programmed for key: the lease no longer
// describes it.
func (s *stack) forget(key string) {
	if old, had := s.peers[key]; had {
		s.remove(old)
		delete(s.peers, key)
	}
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

// retire deletes what old installed and cur does not reuse. The neighbour
// is keyed by the subnet's address, which old and cur share, so cur's
// NeighSet already replaced it unless cur is direct.
func (s *stack) retire(old, cur peer) {
	if !old.sameRoute(cur) {
		s.logGone("route", old.subnet.String(), s.b.nl.RouteDel(s.routeFor(old)))
	}
	if old.direct {
		return
	}
	if cur.direct {
		s.logGone("neighbour", old.subnet.Addr().String(), s.b.nl.NeighDel(s.arpFor(old)))
	}
	if cur.direct || cur.mac != old.mac || cur.publicIP != old.publicIP {
		s.logGone("fdb entry", old.mac+" dst "+old.publicIP.String(), s.b.nl.NeighDel(s.fdbFor(old)))
	}
}

func (s *stack) remove(p peer) {
	s.logGone("route", p.subnet.String(), s.b.nl.RouteDel(s.routeFor(p)))
	if p.direct {
		return
	}
	s.logGone("neighbour", p.subnet.Addr().String(), s.b.nl.NeighDel(s.arpFor(p)))
	s.logGone("fdb entry", p.mac+" dst "+p.publicIP.String(), s.b.nl.NeighDel(s.fdbFor(p)))
}

// logGone reports a failed delete unless the object was already gone.
func (s *stack) logGone(what, name string, err error) {
	if err == nil || backend.IsGone(err) {
		return
	}
	klog.Errorf("vxlan: delete %s %s on %s: %v", what, name, s.dev.Name, err)
}
