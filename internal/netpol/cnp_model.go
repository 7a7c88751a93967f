package netpol

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Tier is a ClusterNetworkPolicy tier (policy.networking.k8s.io). The
// order of evaluation is fixed: the Admin tier, then NetworkPolicy, then
// the Baseline tier, then the default allow.
type Tier string

// The two tiers of ClusterNetworkPolicy.
const (
	AdminTier    Tier = "Admin"
	BaselineTier Tier = "Baseline"
)

// Action is what a ClusterNetworkPolicy rule does with a matching
// connection: Accept and Deny are final within the direction; Pass (Admin
// tier only) skips the rest of the Admin tier and leaves the decision to
// NetworkPolicy and the Baseline tier.
type Action string

// The actions of ClusterNetworkPolicy rules.
const (
	Accept Action = "Accept"
	Deny   Action = "Deny"
	Pass   Action = "Pass"
)

// TierRule is one rule of one ClusterNetworkPolicy as it applies to one
// pod: the rule is spec.ingress[Rule] or spec.egress[Rule] of Policy.
type TierRule struct {
	Tier      Tier
	Policy    string
	Priority  int32
	Direction Direction
	Rule      int
	// Name is the rule's optional name in the policy.
	Name    string
	Action  Action
	Entries []Entry
	// key identifies equal rules (named ports resolved alike), so pods
	// with the same rules share one chain.
	key string
}

func (r *TierRule) String() string {
	s := fmt.Sprintf("%s tier ClusterNetworkPolicy %s (priority %d) spec.%s[%d]", r.Tier, r.Policy, r.Priority, r.Direction, r.Rule)
	if r.Name != "" {
		s += fmt.Sprintf(" %q", r.Name)
	}
	return s + ": " + string(r.Action)
}

// matches reports whether the rule covers peer:port/proto.
func (r *TierRule) matches(peer netip.Addr, proto Proto, port uint16) bool {
	return entriesMatch(r.Entries, peer, proto, port)
}

// ruleOrder sorts rules by precedence: lower priority first; policies of
// equal priority (the API leaves their order to the implementation) by
// name, so the outcome does not depend on the order of the API's lists;
// within a policy, in the order written.
func ruleOrder(a, b *TierRule) int {
	return cmp.Or(cmp.Compare(a.Priority, b.Priority), strings.Compare(a.Policy, b.Policy), cmp.Compare(a.Rule, b.Rule))
}

// addTierRule appends rule to the pod's rules of its tier, in precedence
// order.
func (r *PodRules) addTierRule(t *TierRule) {
	rules := &r.Admin
	if t.Tier == BaselineTier {
		rules = &r.Baseline
	}
	i, _ := slices.BinarySearchFunc(*rules, t, ruleOrder)
	*rules = slices.Insert(*rules, i, t)
}

// hasTiers is true when ClusterNetworkPolicies apply to the pod.
func (r *PodRules) hasTiers() bool { return r != nil && len(r.Admin)+len(r.Baseline) > 0 }

// tierKey tells apart pods whose ClusterNetworkPolicy rules (or, with
// them, NetworkPolicy isolation) differ; empty when no tier applies.
func (r *PodRules) tierKey() string {
	if !r.hasTiers() {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\x00tiers isolated=%t", r.Isolated)
	for _, t := range slices.Concat(r.Admin, r.Baseline) {
		b.WriteString("\x00" + t.key)
	}
	return b.String()
}
