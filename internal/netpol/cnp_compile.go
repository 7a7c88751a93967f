package netpol

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/klog/v2"
	cnpv1 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// cnpPeer is one ingress or egress peer of a ClusterNetworkPolicy rule;
// ingress peers have no nodes or networks.
type cnpPeer struct {
	namespaces, nodes *metav1.LabelSelector
	pods              *cnpv1.NamespacedPod
	networks          []cnpv1.CIDR
}

// cnpRule is an ingress or egress rule of a ClusterNetworkPolicy.
type cnpRule struct {
	name      string
	action    Action
	peers     []cnpPeer
	protocols []cnpv1.ClusterNetworkPolicyProtocol
}

// addClusterPolicies compiles the ClusterNetworkPolicies into the rules of
// the target pods they select; NetworkPolicies are compiled first, so
// their isolation is already in place.
func (c *compiler) addClusterPolicies(in Input, target func(*corev1.Pod) bool) {
	c.nodes = in.Nodes
	for _, pol := range in.ClusterPolicies {
		if c.addClusterPolicy(pol, target) {
			c.model.PolicyCount++
		}
	}
}

func (c *compiler) addClusterPolicy(pol *cnpv1.ClusterNetworkPolicy, target func(*corev1.Pod) bool) bool {
	tier := Tier(pol.Spec.Tier)
	if tier != AdminTier && tier != BaselineTier {
		klog.Errorf("ClusterNetworkPolicy %s: unknown tier %q; the policy is ignored until it is fixed", pol.Name, pol.Spec.Tier)
		return false
	}
	subjects, err := c.subjects(pol.Spec.Subject)
	if err != nil {
		klog.Errorf("ClusterNetworkPolicy %s: subject: %v; the policy is ignored until it is fixed", pol.Name, err)
		return false
	}
	ingress, egress := cnpIngressRules(pol), cnpEgressRules(pol)
	selected := false
	for _, p := range subjects {
		if target != nil && !target(p) {
			continue
		}
		selected = true
		for i, rule := range ingress {
			c.addTierRule(Ingress, p, c.tierRule(pol, Ingress, i, rule, p))
		}
		for i, rule := range egress {
			c.addTierRule(Egress, p, c.tierRule(pol, Egress, i, rule, nil))
		}
	}
	return selected
}

func (c *compiler) addTierRule(d Direction, p *corev1.Pod, t *TierRule) {
	if t == nil {
		return
	}
	for _, ip := range c.ips[p] {
		r := c.model.Rules[d][ip]
		if r == nil {
			r = &PodRules{Pod: c.model.Pods[ip]}
			c.model.Rules[d][ip] = r
		}
		r.addTierRule(t)
	}
}

func cnpIngressRules(pol *cnpv1.ClusterNetworkPolicy) []cnpRule {
	out := make([]cnpRule, len(pol.Spec.Ingress))
	for i, r := range pol.Spec.Ingress {
		out[i] = cnpRule{name: r.Name, action: Action(r.Action), protocols: r.Protocols}
		for _, p := range r.From {
			out[i].peers = append(out[i].peers, cnpPeer{namespaces: p.Namespaces, pods: p.Pods})
		}
	}
	return out
}

func cnpEgressRules(pol *cnpv1.ClusterNetworkPolicy) []cnpRule {
	out := make([]cnpRule, len(pol.Spec.Egress))
	for i, r := range pol.Spec.Egress {
		out[i] = cnpRule{name: r.Name, action: Action(r.Action), protocols: r.Protocols}
		for _, p := range r.To {
			out[i].peers = append(out[i].peers, cnpPeer{namespaces: p.Namespaces, pods: p.Pods, nodes: p.Nodes, networks: p.Networks})
			if len(p.DomainNames) > 0 {
				klog.V(2).Infof("ClusterNetworkPolicy %s: egress domainNames are not supported; that peer matches nothing", pol.Name)
			}
		}
	}
	return out
}

// subjects are the live pods the policy's subject selects.
func (c *compiler) subjects(s cnpv1.ClusterNetworkPolicySubject) ([]*corev1.Pod, error) {
	switch {
	case s.Namespaces != nil:
		return c.cnpPods(s.Namespaces, nil)
	case s.Pods != nil:
		return c.cnpPods(&s.Pods.NamespaceSelector, &s.Pods.PodSelector)
	}
	return nil, fmt.Errorf("neither namespaces nor pods is set")
}

// cnpPods are the pods in the namespaces nsSel selects that podSel (nil:
// every pod) selects.
func (c *compiler) cnpPods(nsSel, podSel *metav1.LabelSelector) ([]*corev1.Pod, error) {
	ns, err := metav1.LabelSelectorAsSelector(nsSel)
	if err != nil {
		return nil, fmt.Errorf("namespace selector: %w", err)
	}
	pods := labels.Everything()
	if podSel != nil {
		if pods, err = metav1.LabelSelectorAsSelector(podSel); err != nil {
			return nil, fmt.Errorf("pod selector: %w", err)
		}
	}
	var out []*corev1.Pod
	for name, ps := range c.byNS {
		if !ns.Matches(c.nsLabels[name]) {
			continue
		}
		for _, p := range ps {
			if pods.Matches(labels.Set(p.Labels)) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// tierRule compiles one rule for one subject pod (for ingress, named
// ports resolve on it; for egress on each destination pod). Rules that
// resolve alike are shared.
func (c *compiler) tierRule(pol *cnpv1.ClusterNetworkPolicy, d Direction, i int, rule cnpRule, subject *corev1.Pod) *TierRule {
	numbered, named := cnpPorts(rule.protocols)
	var sig string
	if subject != nil {
		sig = namedSig(named, subject)
	}
	key := fmt.Sprintf("cnp/%s/%s/%d|%s", pol.Name, d, i, sig)
	if t, ok := c.tierRules[key]; ok {
		return t
	}
	t := &TierRule{
		Tier: Tier(pol.Spec.Tier), Policy: pol.Name, Priority: pol.Spec.Priority,
		Direction: d, Rule: i, Name: rule.name, Action: Action(rule.action), key: key,
	}
	if t.Action == Pass && t.Tier == BaselineTier {
		klog.Errorf("ClusterNetworkPolicy %s spec.%s[%d]: Pass is for the Admin tier only; the rule is ignored", pol.Name, d, i)
		t = nil
	} else {
		t.Entries = c.tierEntries(pol.Name, rule, numbered, named, subject)
	}
	c.tierRules[key] = t
	return t
}

// tierEntries: numbered ports apply to every peer address; named ports
// are looked up on the subject (ingress) or on each destination pod among
// the peers (egress).
func (c *compiler) tierEntries(policy string, rule cnpRule, numbered []networkingv1.NetworkPolicyPort, named []string, subject *corev1.Pod) []Entry {
	peers := c.cnpPeerRanges(policy, rule.peers)
	var entries []Entry
	if len(numbered) > 0 || len(rule.protocols) == 0 {
		ports, _ := resolvePorts(numbered, nil)
		entries = crossEntries(peers, ports, numbered)
	}
	if len(named) == 0 {
		return entries
	}
	if subject != nil {
		return append(entries, pairEntries(peers, cnpNamedPorts(named, subject))...)
	}
	for _, p := range c.pods {
		for _, ip := range c.ips[p] {
			if inRanges(peers, ip) {
				entries = append(entries, pairEntries([]IPRange{{ip, ip}}, cnpNamedPorts(named, p))...)
			}
		}
	}
	return entries
}

// pairEntries pairs every peer range with every port range (none: the
// rule matches nothing, as a named port no pod declares).
func pairEntries(peers []IPRange, ports []PortRange) []Entry {
	var out []Entry
	for _, peer := range peers {
		for _, p := range ports {
			out = append(out, Entry{Peer: peer, Port: p})
		}
	}
	return out
}

// cnpPorts splits a rule's protocols into NetworkPolicy ports (numbers,
// ranges, whole protocols) and named ports.
func cnpPorts(ps []cnpv1.ClusterNetworkPolicyProtocol) (numbered []networkingv1.NetworkPolicyPort, named []string) {
	for _, p := range ps {
		if p.DestinationNamedPort != "" {
			named = append(named, p.DestinationNamedPort)
		}
		for _, pp := range []struct {
			proto corev1.Protocol
			port  *cnpv1.Port
			set   bool
		}{
			{corev1.ProtocolTCP, portOf(p.TCP), p.TCP != nil},
			{corev1.ProtocolUDP, portOfUDP(p.UDP), p.UDP != nil},
			{corev1.ProtocolSCTP, portOfSCTP(p.SCTP), p.SCTP != nil},
		} {
			if pp.set {
				numbered = append(numbered, npPort(pp.proto, pp.port))
			}
		}
	}
	return numbered, named
}

func portOf(p *cnpv1.ClusterNetworkPolicyProtocolTCP) *cnpv1.Port {
	if p == nil {
		return nil
	}
	return p.DestinationPort
}

func portOfUDP(p *cnpv1.ClusterNetworkPolicyProtocolUDP) *cnpv1.Port {
	if p == nil {
		return nil
	}
	return p.DestinationPort
}

func portOfSCTP(p *cnpv1.ClusterNetworkPolicyProtocolSCTP) *cnpv1.Port {
	if p == nil {
		return nil
	}
	return p.DestinationPort
}

// npPort is the NetworkPolicy port with the same meaning: no port is
// every port of the protocol.
func npPort(proto corev1.Protocol, p *cnpv1.Port) networkingv1.NetworkPolicyPort {
	out := networkingv1.NetworkPolicyPort{Protocol: &proto}
	switch {
	case p == nil:
	case p.Range != nil:
		from := intstr.FromInt32(p.Range.Start)
		out.Port, out.EndPort = &from, &p.Range.End
	default:
		n := intstr.FromInt32(p.Number)
		out.Port = &n
	}
	return out
}

// cnpNamedPorts resolves named ports on pod: a ClusterNetworkPolicy named
// port has no protocol, so it takes the container port's.
func cnpNamedPorts(names []string, pod *corev1.Pod) []PortRange {
	var out []PortRange
	for _, ctr := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, cp := range ctr.Ports {
			if cp.Name == "" || !slices.Contains(names, cp.Name) {
				continue
			}
			proto := Proto(cp.Protocol)
			if proto == "" {
				proto = TCP
			}
			out = append(out, PortRange{proto, uint16(cp.ContainerPort), uint16(cp.ContainerPort)})
		}
	}
	return out
}

func namedSig(names []string, pod *corev1.Pod) string {
	var sig []string
	for _, p := range cnpNamedPorts(names, pod) {
		sig = append(sig, p.String())
	}
	return strings.Join(sig, ",")
}

// cnpPeerRanges are the addresses a rule's peers cover, shared between
// rules with the same peers.
func (c *compiler) cnpPeerRanges(policy string, peers []cnpPeer) []IPRange {
	key := cnpPeersKey(peers)
	if rs, ok := c.peers[key]; ok {
		return rs
	}
	var out []IPRange
	for _, p := range peers {
		rs, err := c.cnpPeer(p)
		if err != nil {
			klog.Errorf("ClusterNetworkPolicy %s: peer: %v; it matches nothing", policy, err)
		}
		out = append(out, rs...)
	}
	out = mergeRanges(out)
	c.peers[key] = out
	return out
}

func (c *compiler) cnpPeer(p cnpPeer) ([]IPRange, error) {
	var pods []*corev1.Pod
	var err error
	switch {
	case p.namespaces != nil:
		pods, err = c.cnpPods(p.namespaces, nil)
	case p.pods != nil:
		pods, err = c.cnpPods(&p.pods.NamespaceSelector, &p.pods.PodSelector)
	case p.nodes != nil:
		return c.nodeRanges(p.nodes)
	case len(p.networks) > 0:
		return networkRanges(p.networks), nil
	}
	var out []IPRange
	for _, pod := range pods {
		for _, ip := range c.ips[pod] {
			out = append(out, IPRange{ip, ip})
		}
	}
	return out, err
}

// nodeRanges are the addresses (status.addresses, host names aside) of the
// nodes sel selects.
func (c *compiler) nodeRanges(sel *metav1.LabelSelector) ([]IPRange, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("node selector: %w", err)
	}
	var out []IPRange
	for _, n := range c.nodes {
		if !s.Matches(labels.Set(n.Labels)) {
			continue
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out = append(out, IPRange{ip.Unmap(), ip.Unmap()})
			}
		}
	}
	return out, nil
}

func networkRanges(cidrs []cnpv1.CIDR) []IPRange {
	var out []IPRange
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(string(s))
		if err != nil {
			klog.Errorf("ClusterNetworkPolicy network %q: %v; it matches nothing", s, err)
			continue
		}
		out = append(out, blockRanges(p, nil)...)
	}
	return out
}

func cnpPeersKey(peers []cnpPeer) string {
	var b strings.Builder
	b.WriteString("cnp")
	for _, p := range peers {
		b.WriteString("|")
		if p.namespaces != nil {
			b.WriteString("n:" + metav1.FormatLabelSelector(p.namespaces))
		}
		if p.pods != nil {
			b.WriteString("pn:" + metav1.FormatLabelSelector(&p.pods.NamespaceSelector) + ";pp:" + metav1.FormatLabelSelector(&p.pods.PodSelector))
		}
		if p.nodes != nil {
			b.WriteString("no:" + metav1.FormatLabelSelector(p.nodes))
		}
		for _, n := range p.networks {
			b.WriteString(";net:" + string(n))
		}
	}
	return b.String()
}
