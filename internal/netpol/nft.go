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

// ruleset is the content of the table as flanneld wants it: the class
// chains with their rules, the sets with their elements, the maps with
// their elements and the counters. The forward chain and the maps
// themselves are always there.
type ruleset struct {
	chains   map[string][]string
	sets     map[string]*setSpec
	maps     map[string]map[string]string // map -> key -> value
	counters map[string]bool
	// tierSetNames caches the sets of ClusterNetworkPolicy rules
	// (cnp_nft.go).
	tierSetNames map[string][2]string
}

type setSpec struct {
	typ   string
	elems map[string][]string // element (parts joined) -> key parts
}

func newRuleset() *ruleset {
	r := &ruleset{chains: map[string][]string{}, sets: map[string]*setSpec{}, maps: map[string]map[string]string{}, counters: map[string]bool{}}
	for _, m := range baseMaps {
		r.maps[m.Name] = map[string]string{}
	}
	return r
}

// buildRuleset lays the model out. Class chains are named after a hash of
// their grants, so a class keeps its name from one sync to the next and
// an update touches only what changed.
func buildRuleset(m *Model, log DropLog) *ruleset {
	r := newRuleset()
	r.addLogChains(log)
	for d, cs := range layout(m) {
		dir := Direction(d)
		for _, c := range cs {
			name := fmt.Sprintf("%s-%016x", dirPrefix(dir), c.hash())
			if c.tiers.hasTiers() {
				r.tierChains(dir, name, c)
			} else {
				r.classChain(dir, name, c)
			}
			r.podElements(dir, name, c)
		}
	}
	return r
}

// classChain adds one class's chain and sets. For ingress the peer is the
// source and allowed packets are accepted; for egress the peer is the
// destination and allowed packets return to the forward chain, which then
// checks the destination's ingress.
func (r *ruleset) classChain(d Direction, name string, c *class) {
	peer, self, allow := "saddr", "daddr", "accept"
	if d == Egress {
		peer, self, allow = "daddr", "saddr", "return"
	}
	var rules []string
	for _, v6 := range []bool{false, true} {
		ports, all := c.elements(v6)
		ip, fam, addrType := ipKeyword(v6), familySuffix(v6), "ipv4_addr"
		if v6 {
			addrType = "ipv6_addr"
		}
		if len(ports) > 0 {
			set := r.addSet(name+"-p"+fam, addrType+" . inet_proto . inet_service", portKeys(ports))
			rules = append(rules, fmt.Sprintf("%s %s . meta l4proto . th dport @%s %s", ip, peer, set, allow))
		}
		if len(all) > 0 {
			set := r.addSet(name+"-a"+fam, addrType, rangeKeys(all))
			rules = append(rules, fmt.Sprintf("%s %s @%s %s", ip, peer, set, allow))
		}
	}
	rules = append(rules, r.logJump(d)...)
	for _, v6 := range []bool{false, true} {
		rules = append(rules, fmt.Sprintf("counter name %s %s map @cnt-%s%s drop",
			ipKeyword(v6), self, dirPrefix(d), familySuffix(v6)))
	}
	// A pod missing from the counter map still must not pass.
	r.chains[name] = append(rules, "drop")
}

func (r *ruleset) addSet(name, typ string, keys [][]string) string {
	s := &setSpec{typ: typ, elems: map[string][]string{}}
	for _, k := range keys {
		s.elems[strings.Join(k, " . ")] = k
	}
	r.sets[name] = s
	return name
}

// podElements maps each pod of the class to the class chain and to its
// drop counter.
func (r *ruleset) podElements(d Direction, chain string, c *class) {
	base := "ingress"
	if d == Egress {
		base = "egress"
	}
	for _, pr := range c.pods {
		cnt := counterName(d, pr.Pod)
		r.counters[cnt] = true
		fam := familySuffix(pr.Pod.IP.Is6())
		ip := pr.Pod.IP.String()
		r.maps[base+fam][ip] = "jump " + chain
		r.maps["cnt-"+dirPrefix(d)+fam][ip] = `"` + cnt + `"`
	}
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
