package traffic

import (
	"fmt"
	"net/netip"
	"strings"
)

// kubeProxyMasqMark is the fwmark kube-proxy sets on packets it wants
// masqueraded; kube-proxy masquerades those itself, so flannel leaves them be.
const kubeProxyMasqMark = 0x4000

type verdict int

const (
	verdictReturn verdict = iota
	verdictMasquerade
	verdictAccept
)

// rule is one implementation-neutral rule. Both the iptables and the
// nftables managers render the same plan, so they cannot drift apart.
type rule struct {
	purpose  string // unique within its chain; the nftables rule comment
	kubeMark bool   // match packets carrying kubeProxyMasqMark
	src, dst netip.Prefix
	notSrc   bool // match packets NOT from src
	notDst   bool // match packets NOT to dst
	verdict  verdict
}

// masqueradeRules is the postrouting plan. Order matters: every RETURN has
// to come before the MASQUERADE rules.
func masqueradeRules(f family) []rule {
	multicast := netip.MustParsePrefix("224.0.0.0/4")
	if f.v6 {
		multicast = netip.MustParsePrefix("ff00::/8")
	}
	return []rule{
		{purpose: "kube-proxy marked, kube-proxy masquerades", kubeMark: true, verdict: verdictReturn},
		{purpose: "local pods to pod network, no masquerade", src: f.subnet, dst: f.network, verdict: verdictReturn},
		{purpose: "pod network to local pods, no masquerade", src: f.network, dst: f.subnet, verdict: verdictReturn},
		{purpose: "outside to local pods, no masquerade", src: f.network, notSrc: true, dst: f.subnet, verdict: verdictReturn},
		{purpose: "pods to outside, masquerade", src: f.network, dst: multicast, notDst: true, verdict: verdictMasquerade},
		{purpose: "host to pod network, masquerade", src: f.network, notSrc: true, dst: f.network, verdict: verdictMasquerade},
	}
}

// nftMasqueradeRules is the postrouting plan of upstream's nftables mode,
// which differs from its iptables mode in the fourth rule: it returns
// everything to the cluster network that does not come from this node's
// pods (saddr != subnet), so traffic from the host and from outside to any
// pod keeps its source address there.
func nftMasqueradeRules(f family) []rule {
	r := masqueradeRules(f)
	r[3] = rule{purpose: "not from local pods to pod network, no masquerade", src: f.subnet, notSrc: true, dst: f.network, verdict: verdictReturn}
	return r
}

// forwardRules is the forward plan: accept anything from or to the pods.
func forwardRules(f family) []rule {
	return []rule{
		{purpose: "forward from pod network", src: f.network, verdict: verdictAccept},
		{purpose: "forward to pod network", dst: f.network, verdict: verdictAccept},
	}
}

// iptablesArgs renders r as an iptables rulespec, in the order iptables -S
// prints it, so a freshly installed chain lists exactly as rendered.
func (r rule) iptablesArgs(comment string, fullyRandom bool) []string {
	var args []string
	addr := func(neg bool, flag string, p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		if neg {
			args = append(args, "!")
		}
		args = append(args, flag, p.String())
	}
	addr(r.notSrc, "-s", r.src)
	addr(r.notDst, "-d", r.dst)
	if r.kubeMark {
		mark := fmt.Sprintf("%#x/%#x", kubeProxyMasqMark, kubeProxyMasqMark)
		args = append(args, "-m", "mark", "--mark", mark)
	}
	args = append(args, "-m", "comment", "--comment", comment)
	switch r.verdict {
	case verdictReturn:
		args = append(args, "-j", "RETURN")
	case verdictAccept:
		args = append(args, "-j", "ACCEPT")
	case verdictMasquerade:
		args = append(args, "-j", "MASQUERADE")
		if fullyRandom {
			args = append(args, "--random-fully")
		}
	}
	return args
}

// nftRule renders r as an nftables rule for family keyword ip or ip6,
// exactly as nft lists it, so a listing of a correct table equals our
// rendering (nftables.go).
func (r rule) nftRule(ipKeyword string, fullyRandom bool) string {
	var parts []string
	addr := func(neg bool, field string, p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		op := ""
		if neg {
			op = "!= "
		}
		parts = append(parts, fmt.Sprintf("%s %s %s%s", ipKeyword, field, op, p))
	}
	if r.kubeMark {
		// The whole mark equals 0x4000, not the bit alone: upstream's
		// nftables mode matches it so (its iptables mode tests the bit).
		parts = append(parts, fmt.Sprintf("meta mark 0x%08x", kubeProxyMasqMark))
	}
	addr(r.notSrc, "saddr", r.src)
	addr(r.notDst, "daddr", r.dst)
	switch r.verdict {
	case verdictReturn:
		parts = append(parts, "return")
	case verdictAccept:
		parts = append(parts, "accept")
	case verdictMasquerade:
		parts = append(parts, "masquerade")
		if fullyRandom {
			parts = append(parts, "fully-random")
		}
	}
	return strings.Join(parts, " ")
}
