package traffic

import (
	"strings"
	"testing"
)

// builtinRules is the rules of a built-in chain as iptables -S prints
// them, without the policy line.
func builtinRules(t *testing.T, ns *testNS, table, chain string) []string {
	t.Helper()
	var rules []string
	for _, l := range strings.Split(strings.TrimSpace(ns.sh(t, "iptables -t "+table+" -S "+chain)), "\n") {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	return rules
}

func checkChain(t *testing.T, ns *testNS, table, chain, when string, want ...string) {
	t.Helper()
	got := builtinRules(t, ns, table, chain)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: %s/%s is\n%s\nwant\n%s", when, table, chain, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The jumps into FLANNEL-POSTRTG and FLANNEL-FWD are appended, as
// upstream appends them, so rules another firewall put in POSTROUTING and
// FORWARD first still apply; each start moves them back to the end (a jump
// that an older flanneld inserted at the top included), and a resync
// leaves rules appended after them alone.
func TestJumpsAppendedAfterOtherRules(t *testing.T) {
	requireRoot(t)
	guardRootNamespace(t)
	ns := newNS(t, "ttr-jump")
	const (
		drop     = "-A FORWARD -s 10.244.1.2/32 -d 10.244.2.2/32 -j DROP"
		snat     = "-A POSTROUTING -s 10.244.1.3/32 -j SNAT --to-source 198.51.100.9"
		fwdJump  = `-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`
		masqJump = `-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`
		later    = "-A FORWARD -s 10.244.3.3/32 -j DROP"
	)
	// What an older flanneld left: its jumps first; then another firewall's
	// rules, appended.
	ns.sh(t, `iptables -t nat -N FLANNEL-POSTRTG && iptables -t filter -N FLANNEL-FWD &&
		iptables -t nat -I POSTROUTING 1 -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG &&
		iptables -t filter -I FORWARD 1 -m comment --comment "flanneld forward" -j FLANNEL-FWD &&
		iptables -t filter `+drop+` &&
		iptables -t nat `+snat)

	applyIn(t, ns, newManagerIn(t, ns, iptablesImpl, fullConfig()))
	checkChain(t, ns, "filter", "FORWARD", "start", drop, fwdJump)
	checkChain(t, ns, "nat", "POSTROUTING", "start", snat, masqJump)

	m := newManagerIn(t, ns, iptablesImpl, fullConfig())
	applyIn(t, ns, m)
	ns.sh(t, "iptables -t filter "+later)
	if applyIn(t, ns, m) {
		t.Error("a resync reported a repair for a rule appended after our jump")
	}
	checkChain(t, ns, "filter", "FORWARD", "resync", drop, fwdJump, later)

	applyIn(t, ns, newManagerIn(t, ns, iptablesImpl, fullConfig()))
	checkChain(t, ns, "filter", "FORWARD", "restart", drop, later, fwdJump)
}
