package netpol

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// tierChains lays out a class that ClusterNetworkPolicies apply to, as
// two chains. The class chain holds the Admin rules in precedence order
// and then goes to <class>-r; a Pass goes there at once. <class>-r is the
// NetworkPolicy chain (classChain: its grants, else count and drop) when
// a NetworkPolicy isolates the class's pods, else the Baseline rules, at
// whose end the default allows (the chain returns to the forward chain).
// An accepted egress returns, so the destination's ingress still decides.
func (r *ruleset) tierChains(d Direction, name string, c *class) {
	rest := name + "-r"
	var rules []string
	for _, t := range c.tiers.Admin {
		rules = append(rules, r.tierRule(d, t, "goto "+rest)...)
	}
	r.chains[name] = append(rules, "goto "+rest)
	if c.tiers.Isolated {
		r.classChain(d, rest, c)
		return
	}
	rules = nil
	for _, t := range c.tiers.Baseline {
		rules = append(rules, r.tierRule(d, t, "")...)
	}
	r.chains[rest] = rules
}

// tierRule renders one rule, per family: its sets (the peers on ports,
// the peers on every port), each matched with the rule's verdict. A Deny
// counts the drop in the pod's counter; a pod missing from the counter
// map (the counter statement then ends the rule) is dropped by the
// second, uncounted rule.
func (r *ruleset) tierRule(d Direction, t *TierRule, pass string) []string {
	peer, self, verdicts := "saddr", "daddr", []string{"accept"}
	if d == Egress {
		peer, self, verdicts[0] = "daddr", "saddr", "return"
	}
	var out []string
	for _, v6 := range []bool{false, true} {
		ip, fam := ipKeyword(v6), familySuffix(v6)
		switch t.Action {
		case Deny:
			verdicts = []string{fmt.Sprintf("counter name %s %s map @cnt-%s%s drop", ip, self, dirPrefix(d), fam), "drop"}
		case Pass:
			verdicts = []string{pass}
		}
		var matches []string
		ps, as := r.tierSets(t, v6)
		if ps != "" {
			matches = append(matches, fmt.Sprintf("%s %s . meta l4proto . th dport @%s", ip, peer, ps))
		}
		if as != "" {
			matches = append(matches, fmt.Sprintf("%s %s @%s", ip, peer, as))
		}
		for _, m := range matches {
			for _, v := range verdicts {
				out = append(out, m+" "+v)
			}
		}
	}
	return out
}

// tierSets are the names of a rule's sets in one family (empty: none).
// A set is named after its content, so rules with the same peers and
// ports, and every class a rule governs, share one: a rule whose peers
// are a large namespace costs its elements once.
func (r *ruleset) tierSets(t *TierRule, v6 bool) (ports, all string) {
	key := fmt.Sprintf("%s|%t", t.key, v6)
	if names, ok := r.tierSetNames[key]; ok {
		return names[0], names[1]
	}
	addrType := "ipv4_addr"
	if v6 {
		addrType = "ipv6_addr"
	}
	pe, ae := (&class{grants: []*Grant{{Entries: t.Entries}}}).elements(v6)
	if len(pe) > 0 {
		ports = r.contentSet(addrType+" . inet_proto . inet_service", portKeys(pe))
	}
	if len(ae) > 0 {
		all = r.contentSet(addrType, rangeKeys(ae))
	}
	if r.tierSetNames == nil {
		r.tierSetNames = map[string][2]string{}
	}
	r.tierSetNames[key] = [2]string{ports, all}
	return ports, all
}

// contentSet adds a set named after its type and elements, once.
func (r *ruleset) contentSet(typ string, keys [][]string) string {
	h := fnv.New64a()
	h.Write([]byte(typ))
	for _, k := range keys {
		h.Write([]byte("\x00" + strings.Join(k, " . ")))
	}
	name := fmt.Sprintf("cnp-%016x", h.Sum64())
	if r.sets[name] == nil {
		r.addSet(name, typ, keys)
	}
	return name
}
