package traffic

// Test plumbing for the root-only tests.
//
// How the rules reach a test namespace: go-iptables and knftables exec the
// iptables/nft binaries; a child process inherits the network namespace of
// the OS thread that forks it. The tests therefore construct managers and
// call Apply/Run/Cleanup through testbed.InNamespace, on a locked OS thread
// moved into the test namespace. Namespaces come from tbtest. Every test
// inspects the result through the independent `ip netns exec` path, and
// guardRootNamespace asserts that the root namespace's iptables and
// nftables rulesets are unchanged.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

const nsPrefix = "ttr-"

func requireRoot(t *testing.T) {
	t.Helper()
	tbtest.NeedRoot(t, "ip", "iptables", "ip6tables", "nft")
}

type testNS struct {
	name string
	nl   *netlink.Handle
}

func newNS(t *testing.T, name string) *testNS {
	t.Helper()
	if !strings.HasPrefix(name, nsPrefix) {
		t.Fatalf("namespace %q lacks this package's prefix %q", name, nsPrefix)
	}
	tbtest.NS(t, name)
	nl := tbtest.Handle(t, name)
	return &testNS{name: name, nl: nl}
}

// do runs fn on an OS thread inside the namespace (testbed.InNamespace).
func (ns *testNS) do(fn func() error) error { return testbed.InNamespace(ns.name, fn) }

// sh runs a shell script inside the namespace through `ip netns exec`,
// independently of the thread mechanism the managers rely on.
func (ns *testNS) sh(t *testing.T, script string) string {
	t.Helper()
	out, err := testbed.Exec(context.Background(), ns.name, "sh", "-c", script)
	if err != nil {
		t.Fatal(err)
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

// link connects a (as aName, with aAddr) to b (as bName, with bAddr) by a
// veth pair created directly between the two namespaces. An empty address
// leaves that end unaddressed.
func link(t *testing.T, a *testNS, aName, aAddr string, b *testNS, bName, bAddr string) {
	t.Helper()
	if err := testbed.VethPair(a.name, aName, b.name, bName, 0); err != nil {
		t.Fatal(err)
	}
	for _, end := range []struct {
		ns         *testNS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if end.addr != "" {
			addAddr(t, end.ns, end.name, end.addr)
		}
		if err := testbed.LinkUp(end.ns.name, end.name); err != nil {
			t.Fatal(err)
		}
	}
}

func addAddr(t *testing.T, ns *testNS, dev, addr string) {
	t.Helper()
	if err := testbed.AddAddress(ns.name, dev, netip.MustParsePrefix(addr)); err != nil {
		t.Fatal(err)
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
