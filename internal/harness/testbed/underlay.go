package testbed

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// The underlay: segment 1 is bridge ul0 in the hub namespace, segment 2 is
// bridge ul1 there; the router namespace has a leg on each.
const (
	hubOctet    = 1
	routerOctet = 254
)

// SegmentPrefix is the IPv4 (or, with v6, IPv6) prefix of underlay segment
// 1 or 2.
func SegmentPrefix(seg int, v6 bool) netip.Prefix {
	switch {
	case seg == 1 && !v6:
		return netip.MustParsePrefix("198.51.100.0/24")
	case seg == 2 && !v6:
		return netip.MustParsePrefix("203.0.113.0/24")
	case seg == 1:
		return netip.MustParsePrefix("fd00:198:51:100::/64")
	default:
		return netip.MustParsePrefix("fd00:203:0:113::/64")
	}
}

// segmentAddr is host octet of segment seg, e.g. 198.51.100.11.
func segmentAddr(seg, octet int) netip.Addr {
	b := SegmentPrefix(seg, false).Addr().As4()
	b[3] = byte(octet)
	return netip.AddrFrom4(b)
}

// segmentAddr6 writes the octet's decimal digits as the last IPv6 group
// (node 1 = fd00:198:51:100::11), so v4 and v6 addresses read alike.
func segmentAddr6(seg, octet int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s%d", SegmentPrefix(seg, true).Addr(), octet))
}

func bridgeName(seg int) string { return fmt.Sprintf("ul%d", seg-1) }

func pfx(a netip.Addr, seg int) netip.Prefix {
	return netip.PrefixFrom(a, SegmentPrefix(seg, a.Is6()).Bits())
}

// host is the testbed's host called name at octet on segment seg, with
// its IPv6 twin under Options.IPv6; name "" makes an address holder only.
func (tb *Testbed) host(name string, seg, octet int) *Host {
	h := &Host{Name: name, Addr: segmentAddr(seg, octet)}
	if name != "" {
		h.NS = tb.nsName(name)
	}
	if tb.Opts.IPv6 {
		h.Addr6 = segmentAddr6(seg, octet)
	}
	return h
}

// makeHost records h in *slot (under the lock: Close removes a half-made
// host too) and creates its namespace with sysctls.
func (tb *Testbed) makeHost(slot **Host, h *Host, sysctls map[string]string) error {
	tb.mu.Lock()
	*slot = h
	tb.mu.Unlock()
	if err := CreateNS(h.NS); err != nil {
		return err
	}
	return SetSysctls(h.NS, sysctls)
}

func (tb *Testbed) buildHub() error {
	h := tb.host("hub", 1, hubOctet)
	// The hub is a host on segment 1 (it runs etcd), not a router.
	if err := tb.makeHost(&tb.Hub, h, map[string]string{
		"net.ipv4.ip_forward":              "0",
		"net.ipv6.conf.all.forwarding":     "0",
		"net.ipv6.conf.default.accept_dad": "0",
	}); err != nil {
		return err
	}
	return WithHandle(h.NS, func(nh *netlink.Handle) error {
		for seg := 1; seg <= tb.Opts.Segments; seg++ {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName(seg), MTU: tb.Opts.UnderlayMTU}}
			if err := nh.LinkAdd(br); err != nil {
				return fmt.Errorf("add bridge %s: %w", br.Name, err)
			}
			if err := linkUp(nh, br.Name); err != nil {
				return err
			}
		}
		return addHostAddrs(nh, bridgeName(1), h, 1)
	})
}

func addHostAddrs(nh *netlink.Handle, link string, h *Host, seg int) error {
	if err := addAddr(nh, link, pfx(h.Addr, seg)); err != nil {
		return err
	}
	if h.Addr6.IsValid() {
		return addAddr(nh, link, pfx(h.Addr6, seg))
	}
	return nil
}

// addSegmentRoute routes the other segment through the router.
func (tb *Testbed) addSegmentRoute(nh *netlink.Handle, seg int) error {
	if tb.Opts.Segments != 2 {
		return nil
	}
	other := 3 - seg
	if err := addRoute(nh, SegmentPrefix(other, false), segmentAddr(seg, routerOctet)); err != nil {
		return err
	}
	if tb.Opts.IPv6 {
		return addRoute(nh, SegmentPrefix(other, true), segmentAddr6(seg, routerOctet))
	}
	return nil
}

func (tb *Testbed) buildRouter() error {
	r := tb.host("rtr", 1, routerOctet)
	if err := tb.makeHost(&tb.Router, r, routerSysctls()); err != nil {
		return err
	}
	for seg := 1; seg <= 2; seg++ {
		leg := fmt.Sprintf("eth%d", seg-1)
		if err := tb.plug(r.NS, leg, fmt.Sprintf("rtr%d", seg-1), seg); err != nil {
			return err
		}
		legHost := tb.host("", seg, routerOctet)
		if err := WithHandle(r.NS, func(nh *netlink.Handle) error {
			return addHostAddrs(nh, leg, legHost, seg)
		}); err != nil {
			return err
		}
	}
	// etcd on the hub answers segment-2 nodes through the router.
	return WithHandle(tb.Hub.NS, func(nh *netlink.Handle) error { return tb.addSegmentRoute(nh, 1) })
}

func routerSysctls() map[string]string {
	return map[string]string{
		"net.ipv4.ip_forward":              "1",
		"net.ipv6.conf.all.forwarding":     "1",
		"net.ipv4.conf.all.rp_filter":      "0",
		"net.ipv4.conf.default.rp_filter":  "0",
		"net.ipv6.conf.default.accept_dad": "0",
	}
}

// plug connects a new interface ifname in ns to segment seg's bridge
// through a veth whose hub end is called port, and sets both ends up.
func (tb *Testbed) plug(ns, ifname, port string, seg int) error {
	if err := VethPair(tb.Hub.NS, port, ns, ifname, tb.Opts.UnderlayMTU); err != nil {
		return err
	}
	if err := Attach(tb.Hub.NS, port, bridgeName(seg)); err != nil {
		return err
	}
	return WithHandle(ns, func(nh *netlink.Handle) error { return linkUp(nh, ifname) })
}

// wireNode makes the node namespace, plugs eth0 into its segment and gives
// it addresses and the route to the other segment. No default route: the
// testbed is an island.
func (tb *Testbed) wireNode(n *Node) error {
	if err := CreateNS(n.NS); err != nil {
		return err
	}
	if err := SetSysctls(n.NS, routerSysctls()); err != nil {
		return err
	}
	if err := tb.plug(n.NS, n.Iface, n.Name, n.Segment); err != nil {
		return err
	}
	if err := SetSysctls(n.NS, map[string]string{"net.ipv4.conf." + n.Iface + ".rp_filter": "0"}); err != nil {
		return err
	}
	return WithHandle(n.NS, func(nh *netlink.Handle) error {
		if err := addHostAddrs(nh, n.Iface, &n.Host, n.Segment); err != nil {
			return err
		}
		return tb.addSegmentRoute(nh, n.Segment)
	})
}

func (tb *Testbed) wireOutside(h *Host) error {
	if err := CreateNS(h.NS); err != nil {
		return err
	}
	if err := SetSysctls(h.NS, map[string]string{"net.ipv6.conf.default.accept_dad": "0"}); err != nil {
		return err
	}
	if err := tb.plug(h.NS, "eth0", "out0", 1); err != nil {
		return err
	}
	return WithHandle(h.NS, func(nh *netlink.Handle) error {
		if err := addHostAddrs(nh, "eth0", h, 1); err != nil {
			return err
		}
		return tb.addSegmentRoute(nh, 1)
	})
}
