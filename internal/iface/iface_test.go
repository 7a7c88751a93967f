package iface

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// testNS is a network namespace a test created.
type testNS struct{ name string }

// newNS creates namespace tci-<suffix>-<pid>, runs setup inside it and
// registers its removal.
func newNS(t *testing.T, suffix string, setup func(t *testing.T)) *testNS {
	t.Helper()
	tbtest.NeedRoot(t, "ip")
	tbtest.NeedRangesFree(t)
	n := &testNS{name: tbtest.NS(t, fmt.Sprintf("tci-%s-%d", suffix, os.Getpid()))}
	n.run(t, func() { setup(t) })
	return n
}

// run executes fn on the test's goroutine inside the namespace.
func (n *testNS) run(t *testing.T, fn func()) {
	t.Helper()
	tbtest.InNS(t, n.name, fn)
}

// addLink adds a veth pair name/name+"p" (the kernel here has no dummy
// driver), both up so the link has carrier, with cidrs on name.
func addLink(t *testing.T, name string, mtu int, cidrs ...string) netlink.Link {
	t.Helper()
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: name + "p"}
	if err := netlink.LinkAdd(l); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	peer, err := netlink.LinkByName(name + "p")
	if err != nil {
		t.Fatalf("veth peer %sp: %v", name, err)
	}
	for _, x := range []netlink.Link{l, peer} {
		if err := netlink.LinkSetUp(x); err != nil {
			t.Fatalf("set %s up: %v", x.Attrs().Name, err)
		}
	}
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			t.Fatalf("parse %s: %v", c, err)
		}
		if a.IP.To4() == nil {
			a.Flags = unix.IFA_F_NODAD // no DAD wait: the address is usable at once
		}
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatalf("add %s to %s: %v", c, name, err)
		}
	}
	return l
}

func addDefault(t *testing.T, l netlink.Link, gw string, metric int) {
	t.Helper()
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw), Priority: metric}
	if err := netlink.RouteAdd(r); err != nil {
		t.Fatalf("add default route via %s: %v", gw, err)
	}
}

// standardNS: veths; eth0 198.51.100.11/24 + fd00:198:51:100::11/64 carries both
// default routes; eth1 (MTU 1400) has 203.0.113.11 and .12 and no global
// IPv6; eth2 has only fd00:198:51:100::22/128.
func standardNS(t *testing.T) *testNS {
	return newNS(t, "std", func(t *testing.T) {
		eth0 := addLink(t, "eth0", 1500, "198.51.100.11/24", "fd00:198:51:100::11/64")
		// eth2 before eth1, so a regex matching both meets the unusable one first.
		addLink(t, "eth2", 1500, "fd00:198:51:100::22/128")
		addLink(t, "eth1", 1400, "203.0.113.11/24", "203.0.113.12/24")
		addDefault(t, eth0, "198.51.100.1", 0)
		addDefault(t, eth0, "fd00:198:51:100::1", 0)
	})
}

type want struct {
	iface    string
	mtu      int
	v4, ext4 string
	v6, ext6 string
	errParts []string
}

func check(t *testing.T, got *backend.ExternalInterface, err error, w want) {
	t.Helper()
	if w.errParts != nil {
		if err == nil {
			t.Fatalf("Select succeeded with %s, want an error containing %q", LogLine(got), w.errParts)
		}
		for _, p := range w.errParts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not contain %q", err, p)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("Select: %v", err)
	}
	if got.Iface == nil || got.Iface.Name != w.iface {
		t.Fatalf("interface = %+v, want %s", got.Iface, w.iface)
	}
	if w.mtu != 0 && got.Iface.MTU != w.mtu {
		t.Errorf("MTU = %d, want %d", got.Iface.MTU, w.mtu)
	}
	eq := func(field string, a netip.Addr, s string) {
		t.Helper()
		if s == "" && a.IsValid() {
			t.Errorf("%s = %s, want unset", field, a)
		}
		if s != "" && a != netip.MustParseAddr(s) {
			t.Errorf("%s = %v, want %s", field, a, s)
		}
	}
	eq("IfaceAddr", got.IfaceAddr, w.v4)
	eq("ExtAddr", got.ExtAddr, w.ext4)
	eq("IfaceV6Addr", got.IfaceV6Addr, w.v6)
	eq("ExtV6Addr", got.ExtV6Addr, w.ext6)
}

func TestSelect(t *testing.T) {
	ns := standardNS(t)
	eth0 := want{iface: "eth0", mtu: 1500, v4: "198.51.100.11", ext4: "198.51.100.11"}
	eth1 := want{iface: "eth1", mtu: 1400, v4: "203.0.113.11", ext4: "203.0.113.11"}
	eth1b := want{iface: "eth1", mtu: 1400, v4: "203.0.113.12", ext4: "203.0.113.12"}
	v4 := func(o Options) Options { o.EnableIPv4 = true; return o }
	v6 := func(o Options) Options { o.EnableIPv6 = true; return o }
	dual := func(o Options) Options { o.EnableIPv4, o.EnableIPv6 = true, true; return o }
	tests := []struct {
		name string
		opts Options
		want want
	}{
		{"default route", v4(Options{}), eth0},
		{"no family means IPv4", Options{}, eth0},
		{"iface by name", v4(Options{Ifaces: []string{"eth1"}}), eth1},
		{"iface by IP uses that IP", v4(Options{Ifaces: []string{"203.0.113.12"}}), eth1b},
		{"iface order: missing name then name", v4(Options{Ifaces: []string{"eth9", "eth1"}}), eth1},
		{"iface order: missing IP then IP", v4(Options{Ifaces: []string{"198.51.100.99", "203.0.113.12"}}), eth1b},
		{"iface order: first usable wins", v4(Options{Ifaces: []string{"eth1", "eth0"}}), eth1},
		{"iface order: no IPv4 then usable", v4(Options{Ifaces: []string{"eth2", "eth1"}}), eth1},
		{"iface none usable", v4(Options{Ifaces: []string{"eth9", "198.51.100.99", "eth2"}}),
			want{errParts: []string{"--iface", "eth9: no such interface", "198.51.100.99: no interface has this address", "eth2", "no global IPv4"}}},
		{"iface without IPv4", v4(Options{Ifaces: []string{"eth2"}}),
			want{errParts: []string{"interface eth2 has no global IPv4 address"}}},
		{"iface wins over regex", v4(Options{Ifaces: []string{"eth1"}, IfaceRegex: []string{"eth0"}}), eth1},
		{"iface failing falls back to regex", v4(Options{Ifaces: []string{"eth9", "eth2"}, IfaceRegex: []string{"^eth0$"}}), eth0},
		{"iface and regex failing fall back to can-reach", v4(Options{Ifaces: []string{"eth9"}, IfaceRegex: []string{"^wlan", "^eth2$"}, IfaceCanReach: "203.0.113.50"}), eth1},
		{"iface failing falls back to can-reach", v4(Options{Ifaces: []string{"eth2"}, IfaceCanReach: "203.0.113.50"}), eth1},
		{"all options failing names each", v4(Options{Ifaces: []string{"eth9"}, IfaceRegex: []string{"^wlan"}, IfaceCanReach: "node-2"}),
			want{errParts: []string{"eth9: no such interface", "^wlan: matches no interface", `--iface-can-reach "node-2"`}}},
		{"regex by name", v4(Options{IfaceRegex: []string{"^eth1$"}}), eth1},
		{"regex by IP uses that IP", v4(Options{IfaceRegex: []string{`^203\.0\.113\.12$`}}), eth1b},
		{"regex addresses before names", v4(Options{IfaceRegex: []string{`^(eth0|203\.0\.113\.11)$`}}), eth1},
		{"regex order", v4(Options{IfaceRegex: []string{"^wlan", "^eth1$", "^eth0$"}}), eth1},
		{"regex skips unusable match", v4(Options{IfaceRegex: []string{"^eth[21]$"}}), eth1},
		{"regex matches loopback only", v4(Options{IfaceRegex: []string{"^lo$"}}),
			want{errParts: []string{"--iface-regex", "lo", "no global IPv4"}}},
		{"regex no match", v4(Options{IfaceRegex: []string{"^wlan", `^10\.`}}),
			want{errParts: []string{"^wlan: matches no interface", `^10\.: matches no interface`}}},
		{"regex invalid", v4(Options{IfaceRegex: []string{"eth(("}}),
			want{errParts: []string{`--iface-regex "eth(("`, "not a valid regular expression"}}},
		{"regex wins over can-reach", v4(Options{IfaceRegex: []string{"eth0"}, IfaceCanReach: "203.0.113.50"}), eth0},
		{"can-reach via connected route", v4(Options{IfaceCanReach: "203.0.113.50"}), eth1},
		{"can-reach via default route", v4(Options{IfaceCanReach: "10.244.5.1"}), eth0},
		{"can-reach own address", v4(Options{IfaceCanReach: "203.0.113.12"}), eth1b},
		{"can-reach not an IP", v4(Options{IfaceCanReach: "node-2"}),
			want{errParts: []string{`--iface-can-reach "node-2" is not an IP address`}}},
		{"public IP on no interface: default route", v4(Options{PublicIP: netip.MustParseAddr("203.0.113.200")}),
			want{iface: "eth0", v4: "198.51.100.11", ext4: "203.0.113.200"}},
		{"public IP alone picks the interface owning it", v4(Options{PublicIP: netip.MustParseAddr("203.0.113.12")}), eth1b},
		{"public IPv6 alone picks the interface owning it", v6(Options{PublicIPv6: netip.MustParseAddr("fd00:198:51:100::22")}),
			want{iface: "eth2", v6: "fd00:198:51:100::22", ext6: "fd00:198:51:100::22"}},
		{"public IP with iface", v4(Options{Ifaces: []string{"eth1"}, PublicIP: netip.MustParseAddr("198.51.100.200")}),
			want{iface: "eth1", v4: "203.0.113.11", ext4: "198.51.100.200"}},
		{"public IP must be IPv4", v4(Options{PublicIP: netip.MustParseAddr("fd00:198:51:100::99")}),
			want{errParts: []string{"--public-ip fd00:198:51:100::99 is not an IPv4 address"}}},
		{"public IPv6 must be IPv6", v6(Options{PublicIPv6: netip.MustParseAddr("203.0.113.200")}),
			want{errParts: []string{"--public-ipv6 203.0.113.200 is not an IPv6 address"}}},
		{"IPv6 only: default route", v6(Options{}),
			want{iface: "eth0", v6: "fd00:198:51:100::11", ext6: "fd00:198:51:100::11"}},
		{"IPv6 only: public IPv6", v6(Options{PublicIPv6: netip.MustParseAddr("fd00:198:51:100::99")}),
			want{iface: "eth0", v6: "fd00:198:51:100::11", ext6: "fd00:198:51:100::99"}},
		{"IPv6 only: public IP ignored", v6(Options{PublicIP: netip.MustParseAddr("203.0.113.200")}),
			want{iface: "eth0", v6: "fd00:198:51:100::11", ext6: "fd00:198:51:100::11"}},
		{"IPv6 only: iface without IPv4 is fine", v6(Options{Ifaces: []string{"eth2"}}),
			want{iface: "eth2", v6: "fd00:198:51:100::22", ext6: "fd00:198:51:100::22"}},
		{"IPv6 only: iface by IPv6 address", v6(Options{Ifaces: []string{"fd00:198:51:100::22"}}),
			want{iface: "eth2", v6: "fd00:198:51:100::22", ext6: "fd00:198:51:100::22"}},
		{"IPv6 only: iface without global IPv6", v6(Options{Ifaces: []string{"eth1"}}),
			want{errParts: []string{"interface eth1 has no global IPv6 address"}}},
		{"IPv6 only: regex by IPv6", v6(Options{IfaceRegex: []string{`::22$`}}),
			want{iface: "eth2", v6: "fd00:198:51:100::22", ext6: "fd00:198:51:100::22"}},
		{"IPv6 only: can-reach", v6(Options{IfaceCanReach: "fd00:198:51:100::50"}),
			want{iface: "eth0", v6: "fd00:198:51:100::11", ext6: "fd00:198:51:100::11"}},
		{"dual stack: default route", dual(Options{}),
			want{iface: "eth0", v4: "198.51.100.11", ext4: "198.51.100.11", v6: "fd00:198:51:100::11", ext6: "fd00:198:51:100::11"}},
		{"dual stack: both public", dual(Options{PublicIP: netip.MustParseAddr("203.0.113.200"), PublicIPv6: netip.MustParseAddr("fd00:198:51:100::99")}),
			want{iface: "eth0", v4: "198.51.100.11", ext4: "203.0.113.200", v6: "fd00:198:51:100::11", ext6: "fd00:198:51:100::99"}},
		{"dual stack: iface by IPv6 keeps IPv4", dual(Options{Ifaces: []string{"fd00:198:51:100::11"}}),
			want{iface: "eth0", v4: "198.51.100.11", ext4: "198.51.100.11", v6: "fd00:198:51:100::11", ext6: "fd00:198:51:100::11"}},
		{"dual stack: iface lacking IPv6", dual(Options{Ifaces: []string{"eth1"}}),
			want{errParts: []string{"eth1", "no global IPv6"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns.run(t, func() {
				got, err := Select(tt.opts)
				check(t, got, err, tt.want)
			})
		})
	}
}

func TestSelectDefaultRouteLowestMetric(t *testing.T) {
	ns := newNS(t, "metric", func(t *testing.T) {
		eth0 := addLink(t, "eth0", 1500, "198.51.100.11/24")
		eth1 := addLink(t, "eth1", 1500, "203.0.113.11/24")
		addDefault(t, eth0, "198.51.100.1", 200)
		addDefault(t, eth1, "203.0.113.1", 100)
	})
	ns.run(t, func() {
		got, err := Select(Options{EnableIPv4: true})
		check(t, got, err, want{iface: "eth1", v4: "203.0.113.11", ext4: "203.0.113.11"})
	})
}

func TestSelectNoDefaultRoute(t *testing.T) {
	ns := newNS(t, "noroute", func(t *testing.T) {
		addLink(t, "eth0", 1500, "198.51.100.11/24", "fd00:198:51:100::11/64")
	})
	tests := []struct {
		name string
		opts Options
		want want
	}{
		{"IPv4", Options{EnableIPv4: true},
			want{errParts: []string{"no IPv4 default route", "--iface", "--iface-can-reach"}}},
		{"IPv6", Options{EnableIPv6: true},
			want{errParts: []string{"no IPv6 default route", "--iface", "--iface-can-reach"}}},
		{"can-reach unreachable", Options{EnableIPv4: true, IfaceCanReach: "203.0.113.50"},
			want{errParts: []string{"--iface-can-reach 203.0.113.50", "no route"}}},
		{"iface still works", Options{EnableIPv4: true, Ifaces: []string{"eth0"}},
			want{iface: "eth0", v4: "198.51.100.11", ext4: "198.51.100.11"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns.run(t, func() {
				got, err := Select(tt.opts)
				check(t, got, err, tt.want)
			})
		})
	}
}

// TestSelectUsesCurrentNamespace proves Select looks only at the calling
// thread's namespace: the same names resolve differently in two namespaces.
func TestSelectUsesCurrentNamespace(t *testing.T) {
	a := newNS(t, "nsa", func(t *testing.T) { addLink(t, "ext", 1500, "198.51.100.21/24") })
	b := newNS(t, "nsb", func(t *testing.T) { addLink(t, "ext", 1450, "203.0.113.21/24") })
	opts := Options{EnableIPv4: true, Ifaces: []string{"ext"}}
	a.run(t, func() {
		got, err := Select(opts)
		check(t, got, err, want{iface: "ext", mtu: 1500, v4: "198.51.100.21", ext4: "198.51.100.21"})
	})
	b.run(t, func() {
		got, err := Select(opts)
		check(t, got, err, want{iface: "ext", mtu: 1450, v4: "203.0.113.21", ext4: "203.0.113.21"})
	})
}

func TestLogLine(t *testing.T) {
	ifc := &net.Interface{Name: "eth1", Index: 3, MTU: 1500}
	a := netip.MustParseAddr
	tests := []struct {
		name string
		e    *backend.ExternalInterface
		want string
	}{
		{"IPv4", &backend.ExternalInterface{Iface: ifc, IfaceAddr: a("198.51.100.11"), ExtAddr: a("198.51.100.11")},
			"using interface eth1 (index 3, MTU 1500) with address 198.51.100.11, public address 198.51.100.11"},
		{"public override", &backend.ExternalInterface{Iface: ifc, IfaceAddr: a("198.51.100.11"), ExtAddr: a("203.0.113.200")},
			"using interface eth1 (index 3, MTU 1500) with address 198.51.100.11, public address 203.0.113.200"},
		{"IPv6 only", &backend.ExternalInterface{Iface: ifc, IfaceV6Addr: a("fd00:198:51:100::11"), ExtV6Addr: a("fd00:198:51:100::11")},
			"using interface eth1 (index 3, MTU 1500) with IPv6 address fd00:198:51:100::11, public IPv6 address fd00:198:51:100::11"},
		{"dual stack", &backend.ExternalInterface{Iface: ifc, IfaceAddr: a("198.51.100.11"), ExtAddr: a("198.51.100.11"), IfaceV6Addr: a("fd00:198:51:100::11"), ExtV6Addr: a("fd00:198:51:100::99")},
			"using interface eth1 (index 3, MTU 1500) with address 198.51.100.11, public address 198.51.100.11, IPv6 address fd00:198:51:100::11, public IPv6 address fd00:198:51:100::99"},
		{"no address", &backend.ExternalInterface{Iface: ifc}, "using interface eth1 (index 3, MTU 1500) with no address"},
		{"nil", nil, "no external interface chosen"},
	}
	for _, tt := range tests {
		if got := LogLine(tt.e); got != tt.want {
			t.Errorf("%s: LogLine = %q, want %q", tt.name, got, tt.want)
		}
	}
}
