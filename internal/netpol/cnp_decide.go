package netpol

import (
	"fmt"
	"net/netip"
)

// side evaluates the pod's rules in one direction for a connection with
// peer, tier by tier: the first matching Admin rule that accepts or
// denies decides; a Pass, or no match, leaves it to NetworkPolicy when one
// isolates the pod, else to the first matching Baseline rule, else the
// default allows.
func (r *PodRules) side(d Direction, peer netip.Addr, proto Proto, port uint16) Side {
	s := Side{Direction: d, Isolated: r.Isolated, Policies: r.Policies}
	for _, t := range r.Admin {
		if !t.matches(peer, proto, port) {
			continue
		}
		if t.Action == Pass {
			s.Passed = t
			break
		}
		s.Rule = t
		return s
	}
	if r.Isolated {
		s.AllowedBy = r.allows(peer, proto, port)
		return s
	}
	for _, t := range r.Baseline {
		if t.matches(peer, proto, port) {
			s.Rule = t
			return s
		}
	}
	return s
}

// describeTier says which ClusterNetworkPolicy rule decided, or passed
// the decision on; ok is false when none took part.
func (s Side) describeTier() (string, bool) {
	if s.Rule != nil {
		verdict := "allowed"
		if s.Rule.Action == Deny {
			verdict = "denied"
		}
		return fmt.Sprintf("%s by %s", verdict, s.Rule), true
	}
	return "", false
}

// passedNote is appended when an Admin rule passed the decision on.
func (s Side) passedNote() string {
	if s.Passed == nil {
		return ""
	}
	return fmt.Sprintf(" (passed on by %s)", s.Passed)
}
