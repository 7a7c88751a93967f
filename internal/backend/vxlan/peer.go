package vxlan

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
)

// stack is one address family's half of the network: its device and the
// peers programmed on it. The IPv4 half reads a lease's Subnet, PublicIP
// and BackendData, the IPv6 half IPv6Subnet, PublicIPv6 and BackendV6Data.
// Each peer asks for a neighbour and an FDB entry and then a route on the
// device (with DirectRouting and a peer on this node's segment, a plain
// route through the external interface only); the shared engine keeps
// them by lease key, writes, releases and repairs them.
type stack struct {
	b       *Backend
	v6      bool
	dev     *netlink.Vxlan // read and written under the network's lock
	mtu     int
	network netip.Prefix // the cluster network of this family
	own     netip.Prefix
	spec    deviceSpec // to re-create the device, with its MAC, if it vanishes

	set    *backend.PeerSet[peer]
	routes *backend.Routes
	routeT *backend.RouteTable[peer]
	neighT *backend.Table[peer, netip.Addr, vtepMAC]
	fdbT   *backend.Table[peer, vtepMAC, netip.Addr]
}

func newStack(b *Backend, dev *netlink.Vxlan, spec deviceSpec, network netip.Prefix) *stack {
	s := &stack{b: b, v6: spec.srcAddr.Is6(), dev: dev, mtu: spec.mtu, network: network, spec: spec}
	s.routes = backend.NewRoutes(backend.NetlinkRoutes{H: b.nl}, network,
		map[int]string{dev.Index: spec.name, b.ext.Iface.Index: b.ext.Iface.Name})
	s.routeT = backend.NewRouteTable(s.routeFor, s.routes)
	s.neighT = backend.NewTable("neighbour", func(p peer) (netip.Addr, vtepMAC, bool) {
		return p.subnet.Addr(), p.mac, !p.direct
	}, neighbours{s})
	s.fdbT = backend.NewTable("fdb", func(p peer) (vtepMAC, netip.Addr, bool) {
		return p.mac, p.publicIP, !p.direct
	}, fdbEntries{s})
	s.set = backend.NewPeerSet("vxlan", s.neighT, s.fdbT, s.routeT)
	return s
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
	s.routes.SetOwn(subnet)
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

func (p peer) String() string {
	if p.direct {
		return fmt.Sprintf("%s via %s (direct)", p.subnet, p.publicIP)
	}
	return fmt.Sprintf("%s via %s (VTEP %s)", p.subnet, p.publicIP, p.mac)
}

// routeFor is "<subnet> via <VTEP address> dev flannel.<VNI> onlink", or
// for a direct peer "<subnet> via <public address> dev <ext>".
func (s *stack) routeFor(p peer) (backend.PeerRoute, bool) {
	if p.direct {
		return backend.PeerRoute{Dst: p.subnet, Gw: p.publicIP, Link: s.b.ext.Iface.Index}, true
	}
	return backend.PeerRoute{Dst: p.subnet, Gw: p.subnet.Addr(), Link: s.dev.Index, Onlink: true}, true
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

// handle applies one event; see backend.PeerSet.
func (s *stack) handle(ev lease.Event) { s.set.Handle(ev, s.peerFor) }
