package netpol

import (
	"fmt"
	"strings"

	"sigs.k8s.io/knftables"
)

// TableName is the inet table that holds every policy rule; flanneld owns
// it alone, and nothing else in it.
const TableName = "flannel-netpol"

// Names inside the table. Class chains are in-<n> and eg-<n>; their sets
// add -p4/-a4/-p6/-a6 (ports, all ports; per family).
const (
	forwardChain = "forward"
	prefixIn     = "in"
	prefixEg     = "eg"
)

// baseMaps are the maps the forward chain and the class chains look up:
// the class of a pod (verdict maps) and its drop counter.
var baseMaps = []knftables.Map{
	{Name: "ingress4", Type: "ipv4_addr : verdict"},
	{Name: "ingress6", Type: "ipv6_addr : verdict"},
	{Name: "egress4", Type: "ipv4_addr : verdict"},
	{Name: "egress6", Type: "ipv6_addr : verdict"},
	{Name: "cnt-in4", Type: "ipv4_addr : counter"},
	{Name: "cnt-in6", Type: "ipv6_addr : counter"},
	{Name: "cnt-eg4", Type: "ipv4_addr : counter"},
	{Name: "cnt-eg6", Type: "ipv6_addr : counter"},
}

// forwardRules: replies of allowed connections pass first; then the
// source's egress class (whose chain returns when allowed) and the
// destination's ingress class (whose chain accepts when allowed). Traffic
// a pod exchanges with its own node never reaches the forward hook.
var forwardRules = []string{
	"ct state established,related accept",
	"ip saddr vmap @egress4",
	"ip6 saddr vmap @egress6",
	"ip daddr vmap @ingress4",
	"ip6 daddr vmap @ingress6",
}

// objects are the names of what exists in the table.
type objects struct {
	chains, sets, counters map[string]bool
}

func newObjects() objects {
	return objects{chains: map[string]bool{}, sets: map[string]bool{}, counters: map[string]bool{}}
}

// counterName is a pod's drop counter in one direction: "in/<ns>/<pod>";
// the slashes cannot occur in Kubernetes names, so it parses back.
func counterName(d Direction, p PodRef) string {
	return dirPrefix(d) + "/" + p.Namespace + "/" + p.Name
}

// ParseCounterName splits a counter name into direction, namespace, pod.
func ParseCounterName(name string) (dir Direction, ns, pod string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 3 || (parts[0] != prefixIn && parts[0] != prefixEg) {
		return 0, "", "", false
	}
	if parts[0] == prefixEg {
		dir = Egress
	}
	return dir, parts[1], parts[2], true
}

func dirPrefix(d Direction) string {
	if d == Ingress {
		return prefixIn
	}
	return prefixEg
}

func familySuffix(v6 bool) string {
	if v6 {
		return "6"
	}
	return "4"
}

func ipKeyword(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

// classChain writes one class's chain and sets. For ingress the peer is
// the source and allowed packets are accepted; for egress the peer is the
// destination and allowed packets return to the forward chain, which then
// checks the destination's ingress.
func classChain(tx *knftables.Transaction, d Direction, idx int, c *class, want objects) {
	name := fmt.Sprintf("%s-%d", dirPrefix(d), idx)
	peer, self, allow := "saddr", "daddr", "accept"
	if d == Egress {
		peer, self, allow = "daddr", "saddr", "return"
	}
	chain := &knftables.Chain{Name: name}
	tx.Add(chain)
	tx.Flush(chain)
	want.chains[name] = true
	var rules []string
	for _, v6 := range []bool{false, true} {
		ports, all := c.elements(v6)
		ip, fam, addrType := ipKeyword(v6), familySuffix(v6), "ipv4_addr"
		if v6 {
			addrType = "ipv6_addr"
		}
		if len(ports) > 0 {
			set := fillSet(tx, name+"-p"+fam, addrType+" . inet_proto . inet_service", portKeys(ports), want)
			rules = append(rules, fmt.Sprintf("%s %s . meta l4proto . th dport @%s %s", ip, peer, set, allow))
		}
		if len(all) > 0 {
			set := fillSet(tx, name+"-a"+fam, addrType, rangeKeys(all), want)
			rules = append(rules, fmt.Sprintf("%s %s @%s %s", ip, peer, set, allow))
		}
	}
	for _, v6 := range []bool{false, true} {
		rules = append(rules, fmt.Sprintf("counter name %s %s map @cnt-%s%s drop",
			ipKeyword(v6), self, dirPrefix(d), familySuffix(v6)))
	}
	// A pod missing from the counter map still must not pass.
	rules = append(rules, "drop")
	for _, r := range rules {
		tx.Add(&knftables.Rule{Chain: name, Rule: r})
	}
}

// fillSet (re)creates an interval set with exactly keys as elements.
func fillSet(tx *knftables.Transaction, name, typ string, keys [][]string, want objects) string {
	set := &knftables.Set{Name: name, Type: typ, Flags: []knftables.SetFlag{knftables.IntervalFlag}}
	tx.Add(set)
	tx.Flush(set)
	want.sets[name] = true
	for _, k := range keys {
		tx.Add(&knftables.Element{Set: name, Key: k})
	}
	return name
}

func portKeys(ps []portElem) [][]string {
	out := make([][]string, len(ps))
	for i, p := range ps {
		port := fmt.Sprint(p.from)
		if p.to != p.from {
			port = fmt.Sprintf("%d-%d", p.from, p.to)
		}
		out[i] = []string{p.peer.String(), strings.ToLower(string(p.proto)), port}
	}
	return out
}

func rangeKeys(rs []IPRange) [][]string {
	out := make([][]string, len(rs))
	for i, r := range rs {
		out[i] = []string{r.String()}
	}
	return out
}
