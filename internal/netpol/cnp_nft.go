package netpol

import "fmt"

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
	for i, t := range c.tiers.Admin {
		rules = append(rules, r.tierRule(d, fmt.Sprintf("%s-a%d", name, i), t, "goto "+rest)...)
	}
	r.chains[name] = append(rules, "goto "+rest)
	if c.tiers.Isolated {
		r.classChain(d, rest, c)
		return
	}
	rules = nil
	for i, t := range c.tiers.Baseline {
		rules = append(rules, r.tierRule(d, fmt.Sprintf("%s-b%d", name, i), t, "")...)
	}
	r.chains[rest] = rules
}

// tierRule renders one rule, per family: its sets (the peers on ports,
// the peers on every port), each matched with the rule's verdict. A Deny
// counts the drop in the pod's counter; a pod missing from the counter
// map (the counter statement then ends the rule) is dropped by the
// second, uncounted rule.
func (r *ruleset) tierRule(d Direction, set string, t *TierRule, pass string) []string {
	peer, self, verdicts := "saddr", "daddr", []string{"accept"}
	if d == Egress {
		peer, self, verdicts[0] = "daddr", "saddr", "return"
	}
	tmp := &class{grants: []*Grant{{Entries: t.Entries}}}
	var out []string
	for _, v6 := range []bool{false, true} {
		ip, fam, addrType := ipKeyword(v6), familySuffix(v6), "ipv4_addr"
		if v6 {
			addrType = "ipv6_addr"
		}
		switch t.Action {
		case Deny:
			verdicts = []string{fmt.Sprintf("counter name %s %s map @cnt-%s%s drop", ip, self, dirPrefix(d), fam), "drop"}
		case Pass:
			verdicts = []string{pass}
		}
		ports, all := tmp.elements(v6)
		var matches []string
		if len(ports) > 0 {
			s := r.addSet(set+"-p"+fam, addrType+" . inet_proto . inet_service", portKeys(ports))
			matches = append(matches, fmt.Sprintf("%s %s . meta l4proto . th dport @%s", ip, peer, s))
		}
		if len(all) > 0 {
			s := r.addSet(set+"-a"+fam, addrType, rangeKeys(all))
			matches = append(matches, fmt.Sprintf("%s %s @%s", ip, peer, s))
		}
		for _, m := range matches {
			for _, v := range verdicts {
				out = append(out, m+" "+v)
			}
		}
	}
	return out
}
