package traffic

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	v4Network = netip.MustParsePrefix("10.244.0.0/16")
	v4Subnet  = netip.MustParsePrefix("10.244.1.0/24")
	v6Network = netip.MustParsePrefix("fd00:10:244::/56")
	v6Subnet  = netip.MustParsePrefix("fd00:10:244:1::/64")
)

func fullConfig() Config {
	return Config{Network: v4Network, Subnet: v4Subnet, Masquerade: true, FullyRandom: true, Forward: true}
}

func dualConfig() Config {
	c := fullConfig()
	c.IPv6Network, c.IPv6Subnet = v6Network, v6Subnet
	return c
}

// impl is one Manager implementation as the tests see it.
type impl struct {
	name string
	new  func(Config) (Manager, error)
	// dump prints what the namespace holds for one family, exactly
	dump func(t *testing.T, ns *testNS, v6 bool) string
	// breakages are ways an operator or another tool might damage the rules
	breakages []breakage
}

type breakage struct {
	name   string
	script string
}

var iptablesImpl = impl{
	name: "iptables",
	new:  NewIPTables,
	dump: func(t *testing.T, ns *testNS, v6 bool) string {
		bin := "iptables"
		if v6 {
			bin = "ip6tables"
		}
		return ns.sh(t, bin+" -t nat -S; "+bin+" -t filter -S")
	},
	breakages: []breakage{
		{"masquerade rule deleted", `iptables -t nat -D FLANNEL-POSTRTG 5`},
		{"mark rule moved to the end", `iptables -t nat -D FLANNEL-POSTRTG 1 &&
			iptables -t nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`},
		{"duplicate rule inserted", `iptables -t nat -I FLANNEL-POSTRTG 1 -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`},
		{"jump deleted", `iptables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`},
		{"forward rule deleted", `iptables -t filter -D FLANNEL-FWD 2`},
		{"both chains deleted", `iptables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG &&
			iptables -t nat -F FLANNEL-POSTRTG && iptables -t nat -X FLANNEL-POSTRTG &&
			iptables -t filter -D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD &&
			iptables -t filter -F FLANNEL-FWD && iptables -t filter -X FLANNEL-FWD`},
		{"nat table flushed", `iptables -t nat -F`},
	},
}

var nftablesImpl = impl{
	name: "nftables",
	new:  NewNFTables,
	dump: func(t *testing.T, ns *testNS, v6 bool) string {
		if v6 {
			return ns.sh(t, "nft list table ip6 flannel-ipv6 2>&1 || true")
		}
		return ns.sh(t, "nft list table ip flannel-ipv4 2>&1 || true")
	},
	breakages: []breakage{
		{"masquerade rule deleted", `h=$(nft -a list chain ip flannel-ipv4 postrtg | grep 'daddr != 224.0.0.0/4' | sed 's/.*# handle //') &&
			nft delete rule ip flannel-ipv4 postrtg handle $h`},
		{"foreign rule added", `nft add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 masquerade`},
		{"rule replaced by an equal-looking one", `h=$(nft -a list chain ip flannel-ipv4 postrtg | grep 'mark' | sed 's/.*# handle //') &&
			nft replace rule ip flannel-ipv4 postrtg handle $h meta mark and 0x4000 == 0x4000 return`},
		{"forward chain flushed", `nft flush chain ip flannel-ipv4 forward`},
		{"forward chain deleted", `nft flush chain ip flannel-ipv4 forward && nft delete chain ip flannel-ipv4 forward`},
		{"table deleted", `nft delete table ip flannel-ipv4`},
	},
}

var impls = []impl{iptablesImpl, nftablesImpl}

// The exact expected state of a fresh namespace after Apply(fullConfig()).
const (
	wantIPTablesV4 = `-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N FLANNEL-POSTRTG
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N FLANNEL-FWD
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
`
	wantIPTablesV6 = `-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N FLANNEL-POSTRTG
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244:1::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N FLANNEL-FWD
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT
`
	// The nftables tables are exactly what upstream's nftables mode
	// (pkg/trafficmngr/nftables, v0.28) lists for the same configuration:
	// same names, comments, rules and order. nftUpstreamScript is how
	// upstream writes them.
	wantNFTablesV4 = `table ip flannel-ipv4 {
	comment "rules for flannel-ipv4"
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return
		ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
		ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return
		ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
	}

	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.0.0/16 accept
		ip daddr 10.244.0.0/16 accept
	}
}
`
	wantNFTablesV6 = `table ip6 flannel-ipv6 {
	comment "rules for flannel-ipv6"
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return
		ip6 saddr fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return
		ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return
		ip6 saddr != fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return
		ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random
		ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random
	}

	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip6 saddr fd00:10:244::/56 accept
		ip6 daddr fd00:10:244::/56 accept
	}
}
`
	// wantNFTablesEmptyV6 is the IPv6 table of an IPv4-only node, as
	// upstream leaves it.
	wantNFTablesEmptyV6 = `table ip6 flannel-ipv6 {
	comment "rules for flannel-ipv6"
}
`
)

func (im impl) want(v6 bool) string {
	switch {
	case im.name == "iptables" && !v6:
		return wantIPTablesV4
	case im.name == "iptables":
		return wantIPTablesV6
	case !v6:
		return wantNFTablesV4
	default:
		return wantNFTablesV6
	}
}

// newManagerIn constructs a manager on a thread inside ns.
func newManagerIn(t *testing.T, ns *testNS, im impl, cfg Config) Manager {
	t.Helper()
	var m Manager
	err := ns.do(func() error {
		var err error
		m, err = im.new(cfg)
		return err
	})
	if err != nil {
		t.Fatalf("new %s manager in %s: %v", im.name, ns.name, err)
	}
	return m
}

func applyIn(t *testing.T, ns *testNS, m Manager) bool {
	t.Helper()
	var repaired bool
	err := ns.do(func() error {
		var err error
		repaired, err = m.Apply(context.Background())
		return err
	})
	if err != nil {
		t.Fatalf("Apply in %s: %v", ns.name, err)
	}
	return repaired
}

func cleanupIn(t *testing.T, ns *testNS, m Manager) {
	t.Helper()
	if err := ns.do(func() error { return m.Cleanup(context.Background()) }); err != nil {
		t.Fatalf("Cleanup in %s: %v", ns.name, err)
	}
}

func checkDump(t *testing.T, ns *testNS, im impl, v6 bool, when string) {
	t.Helper()
	if got, want := im.dump(t, ns, v6), im.want(v6); got != want {
		t.Fatalf("%s: %s rules in %s:\n%s\nwant:\n%s", when, im.name, ns.name, got, want)
	}
}

func TestApplyInstallsExactRules(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		m := newManagerIn(t, ns, im, fullConfig())

		if applyIn(t, ns, m) {
			t.Error("first Apply reported a repair; it only installs")
		}
		checkDump(t, ns, im, false, "after Apply")
		if applyIn(t, ns, m) {
			t.Error("second Apply reported a repair although nothing changed")
		}
		checkDump(t, ns, im, false, "after a second Apply")
	})
}

// A restarted daemon must not rewrite rules that are already right: a
// rewrite would briefly leave traffic un-masqueraded.
func TestApplyLeavesCorrectRulesAlone(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		applyIn(t, ns, newManagerIn(t, ns, im, dualConfig()))
		// Both iptables-nft and our tables live in nftables; rule handles
		// change on any rewrite.
		before := ns.sh(t, "nft -a list ruleset")
		if applyIn(t, ns, newManagerIn(t, ns, im, dualConfig())) {
			t.Error("a fresh manager's first Apply reported a repair")
		}
		if after := ns.sh(t, "nft -a list ruleset"); after != before {
			t.Errorf("a fresh manager rewrote correct rules\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

func TestApplyRepairs(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		m := newManagerIn(t, ns, im, fullConfig())
		applyIn(t, ns, m)
		for _, b := range im.breakages {
			ns.sh(t, b.script)
			if im.dump(t, ns, false) == im.want(false) {
				t.Fatalf("%s: the breakage changed nothing; the test is broken", b.name)
			}
			if !applyIn(t, ns, m) {
				t.Errorf("%s: Apply did not report a repair", b.name)
			}
			checkDump(t, ns, im, false, b.name+", then Apply")
			if applyIn(t, ns, m) {
				t.Errorf("%s: the Apply after the repair reported another repair", b.name)
			}
		}
	})
}

func TestRunRestores(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		m := newManagerIn(t, ns, im, fullConfig())
		applyIn(t, ns, m)

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = ns.do(func() error { m.Run(ctx, time.Second); return nil })
		}()
		defer func() { cancel(); <-done }()

		b := im.breakages[0]
		ns.sh(t, b.script)
		broken := time.Now()
		for im.dump(t, ns, false) != im.want(false) {
			if time.Since(broken) > 3*time.Second {
				t.Fatalf("Run (resync 1s) had not restored the rules %s after %q:\n%s", time.Since(broken), b.name, im.dump(t, ns, false))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if took := time.Since(broken); took > 2200*time.Millisecond {
			t.Errorf("Run (resync 1s) took %s to restore the rules, want about 1s", took)
		} else {
			t.Logf("restored %s after %q", took.Round(10*time.Millisecond), b.name)
		}
	})
}

func TestCleanup(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		m := newManagerIn(t, ns, im, dualConfig())
		cleanupIn(t, ns, m) // nothing there yet: must not fail
		applyIn(t, ns, m)
		checkDump(t, ns, im, false, "after Apply")
		checkDump(t, ns, im, true, "after Apply")
		cleanupIn(t, ns, m)
		state := ns.sh(t, "iptables -t nat -S; iptables -t filter -S; ip6tables -t nat -S; ip6tables -t filter -S; nft list tables")
		for _, own := range []string{"FLANNEL", "flanneld", nftTableIPv4, nftTableIPv6} {
			if strings.Contains(state, own) {
				t.Errorf("%s still present after Cleanup:\n%s", own, state)
			}
		}
		cleanupIn(t, ns, m) // twice is fine
		if applyIn(t, ns, m) {
			t.Error("the first Apply after Cleanup reported a repair")
		}
		checkDump(t, ns, im, false, "Apply after Cleanup")
	})
}

func TestIPv6Rules(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		m := newManagerIn(t, ns, im, dualConfig())
		applyIn(t, ns, m)
		checkDump(t, ns, im, false, "dual stack, IPv4")
		checkDump(t, ns, im, true, "dual stack, IPv6")
		if applyIn(t, ns, m) {
			t.Error("second Apply reported a repair")
		}
		checkDump(t, ns, im, true, "dual stack, IPv6, second Apply")

		// IPv6 only: no IPv4 rules at all.
		ns6 := newNS(t, "ttr-node6")
		m6 := newManagerIn(t, ns6, im, Config{IPv6Network: v6Network, IPv6Subnet: v6Subnet, Masquerade: true, FullyRandom: true, Forward: true})
		applyIn(t, ns6, m6)
		checkDump(t, ns6, im, true, "IPv6 only")
		v4 := ns6.sh(t, "iptables -t nat -S; iptables -t filter -S; nft list ruleset ip")
		if strings.Contains(v4, "FLANNEL") || strings.Contains(v4, "chain") {
			t.Errorf("IPv6-only config installed IPv4 rules:\n%s", v4)
		}
	})
}

// Turning a feature off removes its rules; the other feature's stay.
func TestFeatureSwitches(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		applyIn(t, ns, newManagerIn(t, ns, im, fullConfig()))

		noMasq := fullConfig()
		noMasq.Masquerade = false
		applyIn(t, ns, newManagerIn(t, ns, im, noMasq))
		state := im.dump(t, ns, false)
		if masq := regexp.MustCompile(`MASQUERADE|masquerade fully|chain postrtg|FLANNEL-POSTRTG`); masq.MatchString(state) {
			t.Errorf("Masquerade=false left masquerade rules:\n%s", state)
		}
		if !strings.Contains(state, "10.244.0.0/16 accept") && !strings.Contains(state, "-A FLANNEL-FWD -s 10.244.0.0/16") {
			t.Errorf("Masquerade=false removed the forward rules:\n%s", state)
		}

		noFwd := fullConfig()
		noFwd.Forward = false
		applyIn(t, ns, newManagerIn(t, ns, im, noFwd))
		state = im.dump(t, ns, false)
		if strings.Contains(state, "chain forward") || strings.Contains(state, "FLANNEL-FWD") {
			t.Errorf("Forward=false left forward rules:\n%s", state)
		}
		if !strings.Contains(state, "masquerade fully-random") && !strings.Contains(state, "-j MASQUERADE") {
			t.Errorf("Forward=false has no masquerade rules:\n%s", state)
		}
	})
}

// inEachImpl runs body for the iptables and the nftables manager, each in
// a fresh node namespace.
func inEachImpl(t *testing.T, body func(t *testing.T, ns *testNS, im impl)) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			requireRoot(t)
			guardRootNamespace(t)
			body(t, newNS(t, "ttr-node"), im)
		})
	}
}
