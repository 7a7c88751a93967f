package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
)

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

func (n *network) peerFor(l *lease.Lease) (peer, error) {
	if l.Attrs.BackendType != TypeName {
		return peer{}, fmt.Errorf("it uses backend %q; every node of a network must use the same backend", l.Attrs.BackendType)
	}
	if !l.Subnet.IsValid() || !l.Attrs.PublicIP.Is4() {
		return peer{}, fmt.Errorf("lease has no IPv4 subnet or public address")
	}
	mac, err := decodeLeaseData(l.Attrs.BackendData)
	if err != nil {
		return peer{}, err
	}
	p := peer{subnet: l.Subnet, publicIP: l.Attrs.PublicIP, mac: mac.String()}
	p.direct = n.b.opts.DirectRouting && n.onLink(p.publicIP)
	return p, nil
}

// onLink says whether addr is reachable without a gateway, the same test
// upstream uses to decide on direct routing.
func (n *network) onLink(addr netip.Addr) bool {
	routes, err := n.b.nl.RouteGet(net.IP(addr.AsSlice()))
	if err != nil || len(routes) == 0 {
		return false
	}
	return routes[0].Gw == nil
}

func (n *network) routeFor(p peer) *netlink.Route {
	if p.direct {
		return &netlink.Route{Dst: ipNet(p.subnet), Gw: net.IP(p.publicIP.AsSlice()), LinkIndex: n.b.ext.Iface.Index}
	}
	return &netlink.Route{Dst: ipNet(p.subnet), Gw: p.vtepIP(), LinkIndex: n.dev.Index, Flags: int(netlink.FLAG_ONLINK)}
}

func (n *network) arpFor(p peer) *netlink.Neigh {
	mac, _ := net.ParseMAC(p.mac)
	return &netlink.Neigh{LinkIndex: n.dev.Index, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: p.vtepIP(), HardwareAddr: mac}
}

func (n *network) fdbFor(p peer) *netlink.Neigh {
	mac, _ := net.ParseMAC(p.mac)
	return &netlink.Neigh{LinkIndex: n.dev.Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: net.IP(p.publicIP.AsSlice()), HardwareAddr: mac}
}

// program installs neighbour and FDB entries before the route, so the route
// never points at an unresolved next hop.
func (n *network) program(p peer) error {
	if p.direct {
		if err := n.b.nl.RouteReplace(n.routeFor(p)); err != nil {
			return fmt.Errorf("route %s via %s: %w", p.subnet, p.publicIP, err)
		}
		return nil
	}
	if err := n.b.nl.NeighSet(n.arpFor(p)); err != nil {
		return fmt.Errorf("neighbour %s lladdr %s: %w", p.subnet.Addr(), p.mac, err)
	}
	if err := n.b.nl.NeighSet(n.fdbFor(p)); err != nil {
		return fmt.Errorf("fdb %s dst %s: %w", p.mac, p.publicIP, err)
	}
	if err := n.b.nl.RouteReplace(n.routeFor(p)); err != nil {
		n.remove(p)
		return fmt.Errorf("route %s via %s onlink: %w", p.subnet, p.subnet.Addr(), err)
	}
	return nil
}

func (n *network) remove(p peer) {
	logGone("route", p.subnet.String(), n.b.nl.RouteDel(n.routeFor(p)))
	if p.direct {
		return
	}
	logGone("neighbour", p.subnet.Addr().String(), n.b.nl.NeighDel(n.arpFor(p)))
	logGone("fdb entry", p.mac, n.b.nl.NeighDel(n.fdbFor(p)))
}

// logGone reports a failed delete unless the object was already gone.
func logGone(what, name string, err error) {
	if err == nil || errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) {
		return
	}
	klog.Errorf("vxlan: delete %s %s: %v", what, name, err)
}
