// Package backendtest builds small labs of network namespaces for backend
// component tests: a hub namespace whose bridges are the underlay segments
// (and which routes between them when given gateway addresses), nodes with
// an eth0 on a segment, and one pod per node behind a veth. Nothing is ever
// created in the caller's (root) namespace, and everything is removed when
// the test ends, also when it fails.
package backendtest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/backend"
)

// Address ranges of the labs. Tests stay inside them; NewLab refuses to
// run when the host itself uses any of them.
var (
	Segment1  = netip.MustParsePrefix("198.51.100.0/24")
	Segment2  = netip.MustParsePrefix("203.0.113.0/24")
	Segment6  = netip.MustParsePrefix("fd00:198:51:100::/64")
	PodNet    = netip.MustParsePrefix("10.244.0.0/16")
	PodNet6   = netip.MustParsePrefix("fd00:10:244::/56")
	labRanges = []netip.Prefix{Segment1, Segment2, Segment6, PodNet, PodNet6}
)

// Lab is one test's set of namespaces, all named <prefix>-<something>.
type Lab struct {
	t      testing.TB
	prefix string
	hub    string
	ns     []string // every namespace created, in order
	nseg   int
}

// NewLab checks that the test can run (root, the ip tool, lab ranges unused
// on this host) and creates the hub namespace. It skips the test when root
// or a tool is missing and fails it when the host's addresses collide.
func NewLab(t testing.TB, prefix string) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	for _, tool := range []string{"ip", "bridge", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs the %s tool (iproute2 / iputils-ping): %v", tool, err)
		}
	}
	if err := checkRangesFree(); err != nil {
		t.Fatal(err)
	}
	l := &Lab{t: t, prefix: prefix}
	// Cleanups run last-in first-out: the state dump sees every namespace
	// before they are all deleted.
	t.Cleanup(l.deleteAll)
	t.Cleanup(l.dumpIfFailed)
	l.hub = l.newNS("hub")
	l.sysctl(l.hub, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	return l
}

// checkRangesFree refuses to build a lab when the host has an address or
// route inside a lab range: whoever reads the host's tables must never meet
// the same addresses twice.
func checkRangesFree() error {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list host routes: %w", err)
	}
	var used []string
	var prefixes []netip.Prefix
	for _, a := range addrs {
		if p, ok := backend.PrefixOf(a.IPNet); ok {
			prefixes, used = append(prefixes, p.Masked()), append(used, "address "+a.IPNet.String())
		}
	}
	for _, r := range routes {
		if p, ok := backend.PrefixOf(r.Dst); ok && p.Bits() > 0 {
			prefixes, used = append(prefixes, p.Masked()), append(used, "route "+r.Dst.String())
		}
	}
	for i, p := range prefixes {
		for _, r := range labRanges {
			if p.Overlaps(r) {
				return fmt.Errorf("this host uses %s, which overlaps the test range %s; the namespace tests cannot run here", used[i], r)
			}
		}
	}
	return nil
}

// newNS creates <prefix>-<name>, removing a leftover of the same name from
// an earlier, killed run first.
func (l *Lab) newNS(name string) string {
	l.t.Helper()
	ns := l.prefix + "-" + name
	_ = exec.Command("ip", "netns", "del", ns).Run()
	Run(l.t, "ip", "netns", "add", ns)
	l.ns = append(l.ns, ns)
	Run(l.t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

func (l *Lab) deleteAll() {
	for _, ns := range l.ns {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Errorf("remove namespace %s: %v: %s", ns, err, out)
		}
	}
}

// dumpIfFailed logs every namespace's addresses, routes, neighbours and
// FDB, so that a failed data-path check can be understood afterwards.
func (l *Lab) dumpIfFailed() {
	if !l.t.Failed() {
		return
	}
	for _, ns := range l.ns {
		var b strings.Builder
		for _, argv := range [][]string{
			{"ip", "-n", ns, "-br", "link"}, {"ip", "-n", ns, "-br", "addr"},
			{"ip", "-n", ns, "route"}, {"ip", "-n", ns, "-6", "route"},
			{"ip", "-n", ns, "neigh"}, {"bridge", "-n", ns, "fdb", "show"},
		} {
			out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
			fmt.Fprintf(&b, "$ %s\n%s", strings.Join(argv, " "), out)
		}
		l.t.Logf("state of %s:\n%s", ns, b.String())
	}
}

func (l *Lab) sysctl(ns string, settings ...string) {
	l.t.Helper()
	Run(l.t, append([]string{"ip", "netns", "exec", ns, "sysctl", "-wq"}, settings...)...)
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
func (l *Lab) Segment(bridge string, mtu int, gateways ...string) *Segment {
	l.t.Helper()
	// A bridge without an address of its own takes its lowest port MAC
	// and changes it when that port moves, leaving nodes' ARP entries for
	// the gateway pointing nowhere. Multicast snooping without a querier
	// can drop IPv6 neighbour solicitations.
	l.nseg++
	mac := fmt.Sprintf("02:00:00:00:00:%02x", l.nseg)
	Run(l.t, "ip", "-n", l.hub, "link", "add", "name", bridge, "address", mac, "mtu", fmt.Sprint(mtu), "type", "bridge", "mcast_snooping", "0")
	s := &Segment{Bridge: bridge, MTU: mtu}
	for _, g := range gateways {
		p := netip.MustParsePrefix(g)
		addAddr(l.t, l.hub, bridge, p)
		s.Gateways = append(s.Gateways, p)
	}
	Run(l.t, "ip", "-n", l.hub, "link", "set", "dev", bridge, "up")
	return s
}

// Node is a namespace standing in for a flannel node.
type Node struct {
	Name  string
	NS    string
	H     *netlink.Handle
	Ext   *backend.ExternalInterface
	Addr  netip.Addr // eth0's IPv4 address, if any
	Addr6 netip.Addr // eth0's IPv6 address, if any

	lab  *Lab
	port string // eth0's peer in the hub
}

// Node creates namespace <prefix>-<name> with eth0 on seg and the given
// addresses ("198.51.100.11/24", "fd00:198:51:100::11/64"), forwarding on.
func (l *Lab) Node(name string, seg *Segment, addrs ...string) *Node {
	l.t.Helper()
	n := &Node{Name: name, NS: l.newNS(name), lab: l, port: "p-" + name}
	l.sysctl(n.NS, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	Run(l.t, "ip", "-n", l.hub, "link", "add", "name", n.port, "mtu", fmt.Sprint(seg.MTU), "type", "veth",
		"peer", "name", "eth0", "mtu", fmt.Sprint(seg.MTU), "netns", n.NS)
	Run(l.t, "ip", "-n", l.hub, "link", "set", "dev", n.port, "master", seg.Bridge, "up")
	nsh, err := netns.GetFromName(n.NS)
	if err != nil {
		l.t.Fatalf("open namespace %s: %v", n.NS, err)
	}
	l.t.Cleanup(func() { nsh.Close() })
	if n.H, err = netlink.NewHandleAt(nsh); err != nil {
		l.t.Fatalf("netlink handle in %s: %v", n.NS, err)
	}
	l.t.Cleanup(n.H.Close)
	n.address(seg, addrs)
	return n
}

// Move re-attaches the node's eth0 to seg with new addresses, as if the
// machine had been re-cabled and re-addressed.
func (n *Node) Move(seg *Segment, addrs ...string) {
	t := n.lab.t
	t.Helper()
	Run(t, "ip", "-n", n.lab.hub, "link", "set", "dev", n.port, "master", seg.Bridge)
	Run(t, "ip", "-n", n.NS, "addr", "flush", "dev", "eth0", "scope", "global")
	for _, other := range []netip.Prefix{Segment1, Segment2} {
		_ = exec.Command("ip", "-n", n.NS, "route", "del", other.String()).Run()
	}
	n.Addr, n.Addr6 = netip.Addr{}, netip.Addr{}
	n.address(seg, addrs)
}

func (n *Node) address(seg *Segment, addrs []string) {
	t := n.lab.t
	t.Helper()
	for _, a := range addrs {
		p := netip.MustParsePrefix(a)
		addAddr(t, n.NS, "eth0", p)
		if p.Addr().Is4() {
			n.Addr = p.Addr()
		} else {
			n.Addr6 = p.Addr()
		}
	}
	Run(t, "ip", "-n", n.NS, "link", "set", "eth0", "up")
	for _, gw := range seg.Gateways {
		for _, other := range []netip.Prefix{Segment1, Segment2} {
			if gw.Addr().Is4() && !other.Contains(gw.Addr()) {
				Run(t, "ip", "-n", n.NS, "route", "replace", other.String(), "via", gw.Addr().String(), "dev", "eth0")
			}
		}
	}
	link, err := n.H.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0 in %s: %v", n.NS, err)
	}
	a := link.Attrs()
	n.Ext = &backend.ExternalInterface{
		Iface:     &net.Interface{Name: a.Name, Index: a.Index, MTU: a.MTU, HardwareAddr: a.HardwareAddr, Flags: a.Flags},
		IfaceAddr: n.Addr, IfaceV6Addr: n.Addr6, ExtAddr: n.Addr, ExtV6Addr: n.Addr6,
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
func (l *Lab) Pod(n *Node, mtu int, subnets ...netip.Prefix) *Pod {
	l.t.Helper()
	p := &Pod{NS: l.newNS(n.Name + "-pod")}
	Run(l.t, "ip", "-n", n.NS, "link", "add", "name", "vpod", "mtu", fmt.Sprint(mtu), "type", "veth",
		"peer", "name", "eth0", "mtu", fmt.Sprint(mtu), "netns", p.NS)
	for _, s := range subnets {
		gw, addr := s.Addr().Next(), s.Addr().Next().Next()
		addAddr(l.t, n.NS, "vpod", netip.PrefixFrom(gw, s.Bits()))
		addAddr(l.t, p.NS, "eth0", netip.PrefixFrom(addr, s.Bits()))
		cluster := PodNet
		if addr.Is4() {
			p.Addr = addr
		} else {
			p.Addr6, cluster = addr, PodNet6
		}
		Run(l.t, "ip", "-n", n.NS, "link", "set", "vpod", "up")
		Run(l.t, "ip", "-n", p.NS, "link", "set", "eth0", "up")
		Run(l.t, "ip", "-n", p.NS, "route", "add", cluster.String(), "via", gw.String(), "dev", "eth0")
	}
	return p
}

// addAddr adds an address without duplicate address detection, which would
// keep IPv6 addresses tentative (unusable) for a while.
func addAddr(t testing.TB, ns, dev string, p netip.Prefix) {
	t.Helper()
	argv := []string{"ip", "-n", ns, "addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		argv = append(argv, "nodad")
	}
	Run(t, argv...)
}

// Run runs a command and fails the test when it fails.
func Run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// Ping sends pings from namespace ns to dst until one is answered, for up
// to five seconds (neighbour resolution on a busy machine can take a
// moment), and fails the test if none is. extra are further ping options.
func Ping(t testing.TB, ns string, dst netip.Addr, extra ...string) {
	t.Helper()
	if err := TryPing(ns, dst, 5*time.Second, extra...); err != nil {
		t.Fatal(err)
	}
}

// TryPing is Ping that returns the failure instead.
func TryPing(ns string, dst netip.Addr, within time.Duration, extra ...string) error {
	argv := append([]string{"netns", "exec", ns, "ping", "-n", "-c1", "-W1"}, extra...)
	argv = append(argv, dst.String())
	deadline := time.Now().Add(within)
	for {
		out, err := exec.Command("ip", argv...).CombinedOutput()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ping %s from %s: %v\n%s", dst, ns, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
