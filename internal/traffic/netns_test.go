package traffic

// Test plumbing for the root-only tests.
//
// How the rules reach a test namespace: go-iptables and knftables exec the
// iptables/nft binaries; a child process inherits the network namespace of
// the OS thread that forks it. The tests therefore construct managers and
// call Apply/Run/Cleanup on a locked OS thread that has been moved into the
// test namespace (testNS.do). Such a thread is never unlocked, so Go throws
// it away when the goroutine ends and no other goroutine ever runs in a
// foreign namespace. Every test inspects the result through the independent
// `ip netns exec` path, and guardRootNamespace asserts that the root
// namespace's iptables and nftables rulesets are unchanged.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const nsPrefix = "ttr-"

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and iptables/nftables rules in them")
	}
	for _, bin := range []string{"ip", "iptables", "ip6tables", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs the %s binary: %v", bin, err)
		}
	}
}

// onNewThread runs fn on a fresh, locked OS thread that dies afterwards.
func onNewThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		errc <- fn()
	}()
	return <-errc
}

type testNS struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

func newNS(t *testing.T, name string) *testNS {
	t.Helper()
	if !strings.HasPrefix(name, nsPrefix) {
		t.Fatalf("namespace %q lacks this package's prefix %q", name, nsPrefix)
	}
	_ = netns.DeleteNamed(name) // left over from a killed run
	var h netns.NsHandle
	err := onNewThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		_ = netns.DeleteNamed(name)
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	ns := &testNS{name: name, h: h, nl: nl}
	t.Cleanup(func() {
		nl.Close()
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring up lo in %s: %v", name, err)
	}
	return ns
}

// do runs fn on an OS thread inside the namespace.
func (ns *testNS) do(fn func() error) error {
	return onNewThread(func() error {
		if err := netns.Set(ns.h); err != nil {
			return fmt.Errorf("enter namespace %s: %w", ns.name, err)
		}
		return fn()
	})
}

// sh runs a shell script inside the namespace through `ip netns exec`,
// independently of the thread mechanism the managers rely on.
func (ns *testNS) sh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns.name, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", ns.name, script, err, out)
	}
	return string(out)
}

// rootRuleset is the root namespace's firewall state as the tools print it.
func rootRuleset(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"iptables", "-t", "nat", "-S"},
		{"iptables", "-t", "filter", "-S"},
		{"ip6tables", "-t", "nat", "-S"},
		{"ip6tables", "-t", "filter", "-S"},
		{"nft", "list", "tables"},
		{"nft", "list", "ruleset"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		fmt.Fprintf(&b, "# %s\n%s", strings.Join(args, " "), out)
	}
	return b.String()
}

// guardRootNamespace fails the test if it changes the root namespace's
// iptables or nftables rules, the proof that the rules went where we sent
// them.
func guardRootNamespace(t *testing.T) {
	t.Helper()
	before := rootRuleset(t)
	t.Cleanup(func() {
		after := rootRuleset(t)
		if after != before {
			t.Errorf("the root namespace's rules changed during the test\nbefore:\n%s\nafter:\n%s", before, after)
		}
		for _, own := range []string{masqChain, forwardChain, nftTableIPv4, nftTableIPv6} {
			if strings.Contains(after, own) && !strings.Contains(before, own) {
				t.Errorf("%s showed up in the root namespace", own)
			}
		}
	})
}

func mustAddr(t *testing.T, s string) *netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(s)
	if err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	return a
}

// link connects a (as aName, with aAddr) to b (as bName, with bAddr) by a
// veth pair created directly between the two namespaces. An empty address
// leaves that end unaddressed.
func link(t *testing.T, a *testNS, aName, aAddr string, b *testNS, bName, bAddr string) {
	t.Helper()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.h)),
	}
	if err := a.nl.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s/%s <-> %s/%s: %v", a.name, aName, b.name, bName, err)
	}
	for _, end := range []struct {
		ns         *testNS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		l, err := end.ns.nl.LinkByName(end.name)
		if err != nil {
			t.Fatalf("find %s in %s: %v", end.name, end.ns.name, err)
		}
		if end.addr != "" {
			if err := end.ns.nl.AddrAdd(l, mustAddr(t, end.addr)); err != nil {
				t.Fatalf("address %s on %s/%s: %v", end.addr, end.ns.name, end.name, err)
			}
		}
		if err := end.ns.nl.LinkSetUp(l); err != nil {
			t.Fatalf("bring up %s/%s: %v", end.ns.name, end.name, err)
		}
	}
}

func addAddr(t *testing.T, ns *testNS, dev, addr string) {
	t.Helper()
	l, err := ns.nl.LinkByName(dev)
	if err != nil {
		t.Fatalf("find %s in %s: %v", dev, ns.name, err)
	}
	if err := ns.nl.AddrAdd(l, mustAddr(t, addr)); err != nil {
		t.Fatalf("address %s on %s/%s: %v", addr, ns.name, dev, err)
	}
}

func route(t *testing.T, ns *testNS, dst, via, dev string) {
	t.Helper()
	l, err := ns.nl.LinkByName(dev)
	if err != nil {
		t.Fatalf("find %s in %s: %v", dev, ns.name, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index}
	if dst == "" {
		dst = "0.0.0.0/0"
		if strings.Contains(via, ":") {
			dst = "::/0"
		}
	}
	if _, r.Dst, err = net.ParseCIDR(dst); err != nil {
		t.Fatal(err)
	}
	if via != "" {
		r.Gw = net.ParseIP(via)
		r.Flags = int(netlink.FLAG_ONLINK)
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := ns.nl.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %q dev %s in %s: %v", dst, via, dev, ns.name, err)
	}
}

// sourceSeenBy sends UDP datagrams from `from` to dst:port, where a
// listener opened inside `to` reports the source address of the first one
// to arrive.
func sourceSeenBy(t *testing.T, from, to *testNS, dst string) netip.Addr {
	t.Helper()
	var conn net.PacketConn
	err := to.do(func() error {
		var err error
		conn, err = net.ListenPacket("udp", net.JoinHostPort(dst, "0"))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", dst, to.name, err)
	}
	defer conn.Close()
	target := conn.LocalAddr().String()

	got := make(chan netip.Addr, 1)
	go func() {
		defer close(got)
		buf := make([]byte, 64)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, addr, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		got <- addr.(*net.UDPAddr).AddrPort().Addr().Unmap()
	}()

	var sender net.Conn
	err = from.do(func() error {
		var err error
		sender, err = net.Dial("udp", target)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", target, from.name, err)
	}
	defer sender.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, _ = sender.Write([]byte("ttr"))
		select {
		case a, ok := <-got:
			if !ok {
				t.Fatalf("no datagram from %s reached %s in %s within 5s", from.name, target, to.name)
			}
			return a
		case <-tick.C:
		}
	}
}
