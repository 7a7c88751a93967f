package netpol

import (
	"fmt"
	"net/netip"
	"strings"
)

// Side is the verdict of one direction: the source's egress or the
// destination's ingress.
type Side struct {
	Direction Direction
	// Isolated: some policy selects the pod for this direction.
	Isolated bool
	// Policies isolating the pod.
	Policies []string
	// AllowedBy are the rules that let the connection through.
	AllowedBy []*Grant
	// Rule is the ClusterNetworkPolicy rule that decided (Admin tier
	// before NetworkPolicy, Baseline tier after), nil when none did;
	// Passed the Admin rule that passed the decision on.
	Rule, Passed *TierRule
}

// Allowed is true when the side lets the connection through.
func (s Side) Allowed() bool {
	if s.Rule != nil {
		return s.Rule.Action == Accept
	}
	return !s.Isolated || len(s.AllowedBy) > 0
}

// Decision is the fate of a new connection from one address to another.
type Decision struct {
	Egress, Ingress Side
}

// Allowed is true when both the source's egress and the destination's
// ingress allow the connection.
func (d Decision) Allowed() bool { return d.Egress.Allowed() && d.Ingress.Allowed() }

// Decide is what the model allows for a new connection from src to dst on
// port/proto. Only target pods are isolated: a source or destination the
// model was not compiled for (another node's pod, an outside address)
// restricts nothing on its side.
func (m *Model) Decide(src, dst netip.Addr, proto Proto, port uint16) Decision {
	d := Decision{Egress: Side{Direction: Egress}, Ingress: Side{Direction: Ingress}}
	if r := m.Rules[Egress][src]; r != nil {
		d.Egress = r.side(Egress, dst, proto, port)
	}
	if r := m.Rules[Ingress][dst]; r != nil {
		d.Ingress = r.side(Ingress, src, proto, port)
	}
	return d
}

// Explain writes the decision for people: the verdict, then each side
// with the policies and rules that decide it.
func (d Decision) Explain(from, to string) string {
	var b strings.Builder
	verdict := "DENY"
	if d.Allowed() {
		verdict = "ALLOW"
	}
	fmt.Fprintf(&b, "%s: %s -> %s\n", verdict, from, to)
	for _, s := range []struct {
		side Side
		pod  string
	}{{d.Egress, from}, {d.Ingress, to}} {
		fmt.Fprintf(&b, "  %s of %s: %s%s\n", s.side.Direction, s.pod, s.side.describe(), s.side.passedNote())
	}
	return b.String()
}

func (s Side) describe() string {
	if tier, ok := s.describeTier(); ok {
		return tier
	}
	switch {
	case !s.Isolated:
		return fmt.Sprintf("allowed: no NetworkPolicy selects the pod for %s", s.Direction)
	case len(s.AllowedBy) == 0:
		return fmt.Sprintf("denied: isolated by %s and no %s rule of theirs matches", strings.Join(s.Policies, ", "), s.Direction)
	}
	var rules []string
	for _, g := range s.AllowedBy {
		rules = append(rules, fmt.Sprintf("%s spec.%s[%d]", g.Policy, s.Direction, g.Rule))
	}
	return fmt.Sprintf("allowed by %s (isolated by %s)", strings.Join(rules, ", "), strings.Join(s.Policies, ", "))
}
