package ipsec

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/ipnet"
)

// libipsecDevice is the TUN device charon's kernel-libipsec creates.
const libipsecDevice = "ipsec0"

// tunRoutes sends peers' subnets into ipsec0, where charon encrypts them.
// A nil *tunRoutes does nothing (kernel ESP: policies catch the traffic).
type tunRoutes struct {
	nl  *netlink.Handle
	dev netlink.Link
}

// newTunRoutes finds charon's ipsec0. Its MTU is charon's to choose:
// libipsec reads packets into buffers of the MTU it set (1400), so a
// larger device MTU would have it cut full-size packets short.
func newTunRoutes() (*tunRoutes, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("ipsec: open netlink: %w", err)
	}
	dev, err := h.LinkByName(libipsecDevice)
	if err != nil {
		return nil, fmt.Errorf("ipsec: charon's userspace ESP device %s: %w", libipsecDevice, err)
	}
	if err := h.LinkSetUp(dev); err != nil {
		return nil, fmt.Errorf("ipsec: ip link set %s up: %w", libipsecDevice, err)
	}
	return &tunRoutes{nl: h, dev: dev}, nil
}

func (t *tunRoutes) route(subnet netip.Prefix) *netlink.Route {
	return &netlink.Route{Dst: ipnet.FromPrefix(subnet), LinkIndex: t.dev.Attrs().Index}
}

func (t *tunRoutes) add(subnet netip.Prefix) error {
	if t == nil {
		return nil
	}
	if err := t.nl.RouteReplace(t.route(subnet)); err != nil {
		return fmt.Errorf("ip route replace %s dev %s: %w", subnet, libipsecDevice, err)
	}
	return nil
}

func (t *tunRoutes) remove(subnet netip.Prefix) {
	if t == nil {
		return
	}
	if err := t.nl.RouteDel(t.route(subnet)); err != nil && !backend.IsGone(err) {
		klog.Errorf("ipsec: ip route del %s dev %s: %v", subnet, libipsecDevice, err)
	}
}

func (t *tunRoutes) setSource(own netip.Prefix) error {
	if t == nil {
		return nil
	}
	addr := &netlink.Addr{IPNet: ipnet.FromPrefix(netip.PrefixFrom(own.Addr(), 32))}
	if err := t.nl.AddrReplace(t.dev, addr); err != nil {
		return fmt.Errorf("ipsec: ip addr add %s dev %s: %w", addr.IPNet, libipsecDevice, err)
	}
	return nil
}

func (t *tunRoutes) mtu() int { return t.dev.Attrs().MTU }
