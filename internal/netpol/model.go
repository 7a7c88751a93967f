// Package netpol compiles Kubernetes NetworkPolicies (networking.k8s.io/v1)
// into an abstract model of what each pod may send and receive, renders
// that model into one nftables table, and keeps the table in step with the
// API server. The model is the single source of truth: the kernel rules
// and `flannelctl policy explain` are both derived from it, so what an
// operator is told and what the node enforces cannot disagree.
package netpol

import (
	"fmt"
	"net/netip"
)

// Direction is the side of a connection a policy rule governs.
type Direction int

// Ingress rules govern what a pod receives, Egress rules what it sends.
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// Proto is a transport protocol as the NetworkPolicy API spells it.
type Proto string

// The protocols NetworkPolicy ports may name.
const (
	TCP  Proto = "TCP"
	UDP  Proto = "UDP"
	SCTP Proto = "SCTP"
)

// IPRange is an inclusive range of addresses of one family.
type IPRange struct{ From, To netip.Addr }

// Contains reports whether a is inside r.
func (r IPRange) Contains(a netip.Addr) bool {
	return a.BitLen() == r.From.BitLen() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

func (r IPRange) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// PortRange is an inclusive range of ports of one protocol.
type PortRange struct {
	Proto    Proto
	From, To uint16
}

func (p PortRange) String() string {
	if p.From == p.To {
		return fmt.Sprintf("%d/%s", p.From, p.Proto)
	}
	return fmt.Sprintf("%d-%d/%s", p.From, p.To, p.Proto)
}

// Entry is one allowed peer range on one port range, or on every protocol
// and port when AllPorts is set (a rule without ports).
type Entry struct {
	Peer     IPRange
	Port     PortRange
	AllPorts bool
}

// Grant is what one rule of one policy allows a pod: the rule is
// Policies[i].Spec.Ingress[Rule] or .Egress[Rule], named "ns/name".
type Grant struct {
	Policy  string
	Rule    int
	Entries []Entry
	// key identifies equal grants, so pods with the same grants share one
	// chain of rules in the kernel.
	key string
}

// PodRef names a pod and its address.
type PodRef struct {
	Namespace, Name string
	IP              netip.Addr
}

func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// PodRules is the compiled policy of one pod in one direction.
type PodRules struct {
	Pod PodRef
	// Isolated is true when at least one NetworkPolicy selects the pod
	// for this direction: then only what Grants allow passes (unless the
	// Admin tier decided first).
	Isolated bool
	// Policies are the names of the policies that isolate the pod.
	Policies []string
	Grants   []*Grant
	// Admin and Baseline are the ClusterNetworkPolicy rules that apply,
	// in precedence order (cnp_model.go). A pod they apply to has
	// PodRules even when no NetworkPolicy isolates it.
	Admin, Baseline []*TierRule
}

// Model is the compiled policy of a set of target pods.
type Model struct {
	// Rules holds, per direction, the target pods that some policy
	// applies to, by address. A pod not in the map is not restricted in
	// that direction.
	Rules [2]map[netip.Addr]*PodRules
	// Pods are all pods known with an address (targets or not), by
	// address, for naming peers.
	Pods map[netip.Addr]PodRef
	// PolicyCount is the number of policies that select at least one target.
	PolicyCount int
}

// allows reports whether any grant lets peer:port/proto through, and which
// grants do.
func (r *PodRules) allows(peer netip.Addr, proto Proto, port uint16) []*Grant {
	var by []*Grant
	for _, g := range r.Grants {
		if entriesMatch(g.Entries, peer, proto, port) {
			by = append(by, g)
		}
	}
	return by
}

// entriesMatch reports whether any entry covers peer:port/proto.
func entriesMatch(es []Entry, peer netip.Addr, proto Proto, port uint16) bool {
	for _, e := range es {
		if e.Peer.Contains(peer) && (e.AllPorts || e.Port.Proto == proto && e.Port.From <= port && port <= e.Port.To) {
			return true
		}
	}
	return false
}

// Selected returns the target pods that some policy applies to in either
// direction: the pods whose traffic the node's policy rules must see.
func (m *Model) Selected() []netip.Addr {
	var out []netip.Addr
	for a := range m.Rules[Ingress] {
		out = append(out, a)
	}
	for a := range m.Rules[Egress] {
		if _, dup := m.Rules[Ingress][a]; !dup {
			out = append(out, a)
		}
	}
	return out
}
