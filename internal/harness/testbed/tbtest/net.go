package tbtest

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// The ranges Net uses (the testbed's): underlay segments and pod networks.
var (
	Segment1 = testbed.SegmentPrefix(1, false) // 198.51.100.0/24
	Segment2 = testbed.SegmentPrefix(2, false) // 203.0.113.0/24
	Segment6 = testbed.SegmentPrefix(1, true)  // fd00:198:51:100::/64
	PodNet   = netip.MustParsePrefix("10.244.0.0/16")
	PodNet6  = netip.MustParsePrefix("fd00:10:244::/56")
)

// Net is one test's hand-laid network: a hub namespace whose bridges are
// the underlay segments (routing between them when they carry gateway
// addresses), nodes with an eth0 on a segment, and one pod per node behind
// a veth. Every namespace is <prefix>-<something>; all are removed when the
// test ends, also when it fails, after a dump of their state if it failed.
type Net struct {
	t      testing.TB
	prefix string
	hub    string
	ns     []string // every namespace created, in order
	nseg   int
}

// NewNet checks that the test can run (root, the tools, the ranges free on
// this host) and creates the hub namespace.
func NewNet(t testing.TB, prefix string) *Net {
	t.Helper()
	NeedRoot(t, "ip", "bridge", "ping")
	NeedRangesFree(t)
	n := &Net{t: t, prefix: prefix}
	// Cleanups run last-in first-out: the dump sees every namespace
	// before NS's cleanups delete them.
	t.Cleanup(n.dumpIfFailed)
	n.hub = n.NS("hub")
	n.sysctl(n.hub, map[string]string{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
	return n
}

// NS creates namespace <prefix>-<name>, removed when the test ends.
func (n *Net) NS(name string) string {
	n.t.Helper()
	ns := NS(n.t, n.prefix+"-"+name)
	n.ns = append(n.ns, ns)
	return ns
}

// dumpIfFailed logs every namespace's links, addresses, routes, neighbours
// and FDB, so that a failed data-path check can be understood afterwards.
func (n *Net) dumpIfFailed() {
	if !n.t.Failed() {
		return
	}
	for _, ns := range n.ns {
		var b strings.Builder
		for _, argv := range [][]string{
			{"ip", "-n", ns, "-br", "link"}, {"ip", "-n", ns, "-br", "addr"},
			{"ip", "-n", ns, "route"}, {"ip", "-n", ns, "-6", "route"},
			{"ip", "-n", ns, "neigh"}, {"bridge", "-n", ns, "fdb", "show"},
		} {
			out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
			fmt.Fprintf(&b, "$ %s\n%s", strings.Join(argv, " "), out)
		}
		n.t.Logf("state of %s:\n%s", ns, b.String())
	}
}

func (n *Net) sysctl(ns string, kv map[string]string) {
	n.t.Helper()
	if err := testbed.SetSysctls(ns, kv); err != nil {
		n.t.Fatal(err)
	}
}

func (n *Net) check(err error) {
	n.t.Helper()
	if err != nil {
		n.t.Fatal(err)
	}
}

// Segment is one underlay L2 segment: a bridge in the hub.
type Segment struct {
	Bridge   string
	MTU      int
	Gateways []netip.Prefix // the hub's addresses on it, if it routes
}

// Segment creates a bridge in the hub. With gateways (e.g.
// "198.51.100.1/24") the hub routes between this segment and the others;
// nodes on it get routes to the other underlay ranges through it.
func (n *Net) Segment(bridge string, mtu int, gateways ...string) *Segment {
	n.t.Helper()
	n.nseg++
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, byte(n.nseg)}
	n.check(testbed.AddBridge(n.hub, bridge, mtu, mac))
	s := &Segment{Bridge: bridge, MTU: mtu}
	for _, g := range gateways {
		p := netip.MustParsePrefix(g)
		n.check(testbed.AddAddress(n.hub, bridge, p))
		s.Gateways = append(s.Gateways, p)
	}
	return s
}

// Node is a namespace standing in for a flannel node.
type Node struct {
	Name  string
	NS    string
	H     *netlink.Handle
	NSH   netns.NsHandle // the namespace H works in
	Ext   *backend.ExternalInterface
	Addr  netip.Addr // eth0's IPv4 address, if any
	Addr6 netip.Addr // eth0's IPv6 address, if any

	net  *Net
	port string // eth0's peer in the hub
}

// Node creates namespace <prefix>-<name> with eth0 on seg and the given
// addresses ("198.51.100.11/24", "fd00:198:51:100::11/64"), forwarding on.
func (n *Net) Node(name string, seg *Segment, addrs ...string) *Node {
	n.t.Helper()
	nd := &Node{Name: name, NS: n.NS(name), net: n, port: "p-" + name}
	n.sysctl(nd.NS, map[string]string{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
	n.check(testbed.VethPair(n.hub, nd.port, nd.NS, "eth0", seg.MTU))
	n.check(testbed.Attach(n.hub, nd.port, seg.Bridge))
	nd.H = Handle(n.t, nd.NS)
	nd.NSH = NSHandle(n.t, nd.NS)
	nd.address(seg, addrs)
	return nd
}

// Move re-attaches the node's eth0 to seg with new addresses, as if the
// machine had been re-cabled and re-addressed.
func (nd *Node) Move(seg *Segment, addrs ...string) {
	t := nd.net.t
	t.Helper()
	nd.net.check(testbed.Attach(nd.net.hub, nd.port, seg.Bridge))
	Run(t, "ip", "-n", nd.NS, "addr", "flush", "dev", "eth0", "scope", "global")
	for _, other := range []netip.Prefix{Segment1, Segment2} {
		_ = exec.Command("ip", "-n", nd.NS, "route", "del", other.String()).Run()
	}
	nd.Addr, nd.Addr6 = netip.Addr{}, netip.Addr{}
	nd.address(seg, addrs)
}

func (nd *Node) address(seg *Segment, addrs []string) {
	t := nd.net.t
	t.Helper()
	for _, a := range addrs {
		p := netip.MustParsePrefix(a)
		nd.net.check(testbed.AddAddress(nd.NS, "eth0", p))
		if p.Addr().Is4() {
			nd.Addr = p.Addr()
		} else {
			nd.Addr6 = p.Addr()
		}
	}
	nd.net.check(testbed.LinkUp(nd.NS, "eth0"))
	for _, gw := range seg.Gateways {
		for _, other := range []netip.Prefix{Segment1, Segment2} {
			if gw.Addr().Is4() && !other.Contains(gw.Addr()) {
				nd.net.check(testbed.ReplaceRoute(nd.NS, other, gw.Addr(), "eth0"))
			}
		}
	}
	link, err := nd.H.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0 in %s: %v", nd.NS, err)
	}
	a := link.Attrs()
	nd.Ext = &backend.ExternalInterface{
		Iface:     &net.Interface{Name: a.Name, Index: a.Index, MTU: a.MTU, HardwareAddr: a.HardwareAddr, Flags: a.Flags},
		IfaceAddr: nd.Addr, IfaceV6Addr: nd.Addr6, ExtAddr: nd.Addr, ExtV6Addr: nd.Addr6,
	}
}

// Pod is a namespace behind a veth on a node, addressed in the node's
// subnets.
type Pod struct {
	NS    string
	Addr  netip.Addr
	Addr6 netip.Addr
}

// Pod creates <prefix>-<node>-pod: the pod takes the subnet's second
// address, the node side of the veth the first (the gateway), as flannel's
// CNI plugin would lay it out. One pod per node: the node side holds the
// subnet's connected route.
func (n *Net) Pod(nd *Node, mtu int, subnets ...netip.Prefix) *Pod {
	n.t.Helper()
	p := &Pod{NS: n.NS(nd.Name + "-pod")}
	n.check(testbed.VethPair(nd.NS, "vpod", p.NS, "eth0", mtu))
	for _, s := range subnets {
		gw, addr := s.Addr().Next(), s.Addr().Next().Next()
		n.check(testbed.AddAddress(nd.NS, "vpod", netip.PrefixFrom(gw, s.Bits())))
		n.check(testbed.AddAddress(p.NS, "eth0", netip.PrefixFrom(addr, s.Bits())))
		cluster := PodNet
		if addr.Is4() {
			p.Addr = addr
		} else {
			p.Addr6, cluster = addr, PodNet6
		}
		n.check(testbed.LinkUp(nd.NS, "vpod"))
		n.check(testbed.LinkUp(p.NS, "eth0"))
		n.check(testbed.ReplaceRoute(p.NS, cluster, gw, "eth0"))
	}
	return p
}
