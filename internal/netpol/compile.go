package netpol

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	cnpv1 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// Input is the cluster state a model is compiled from.
type Input struct {
	Policies   []*networkingv1.NetworkPolicy
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	// ClusterPolicies are the ClusterNetworkPolicies (none when the CRD
	// is not installed); Nodes are read for their egress node peers.
	ClusterPolicies []*cnpv1.ClusterNetworkPolicy
	Nodes           []*corev1.Node
}

// compiler holds the indexes of one compilation.
type compiler struct {
	nsLabels map[string]labels.Set
	pods     []*corev1.Pod // with an address, not hostNetwork, not finished
	byNS     map[string][]*corev1.Pod
	ips      map[*corev1.Pod][]netip.Addr
	peers    map[string][]IPRange // peerRanges by namespace and peers
	grants   map[string]*Grant
	model    *Model
	// for ClusterNetworkPolicies (cnp_compile.go)
	nodes     []*corev1.Node
	tierRules map[string]*TierRule
}

// Compile computes the rules of every pod that target accepts (nil: all
// pods). Pods on the host network, without an address, or finished are
// never isolated nor counted as peers: their addresses are the node's, or
// nobody's.
func Compile(in Input, target func(*corev1.Pod) bool) *Model {
	c := &compiler{
		nsLabels:  map[string]labels.Set{},
		grants:    map[string]*Grant{},
		tierRules: map[string]*TierRule{},
		byNS:      map[string][]*corev1.Pod{},
		ips:       map[*corev1.Pod][]netip.Addr{},
		peers:     map[string][]IPRange{},
		model: &Model{
			Rules: [2]map[netip.Addr]*PodRules{{}, {}},
			Pods:  map[netip.Addr]PodRef{},
		},
	}
	for _, ns := range in.Namespaces {
		c.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	for _, p := range in.Pods {
		if !podLive(p) {
			continue
		}
		c.pods = append(c.pods, p)
		c.byNS[p.Namespace] = append(c.byNS[p.Namespace], p)
		c.ips[p] = podIPs(p)
		for _, ip := range c.ips[p] {
			c.model.Pods[ip] = PodRef{Namespace: p.Namespace, Name: p.Name, IP: ip}
		}
	}
	for _, pol := range in.Policies {
		if c.addPolicy(pol, target) {
			c.model.PolicyCount++
		}
	}
	c.addClusterPolicies(in, target)
	return c.model
}

func podLive(p *corev1.Pod) bool {
	return !p.Spec.HostNetwork && len(podIPs(p)) > 0 &&
		p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// podIPs are the pod's addresses from status.podIPs (status.podIP when
// the list is empty, as older kubelets leave it).
func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, s := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(s.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	if len(out) == 0 {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// policyTypes applies the API's defaulting: Ingress always, Egress when
// the policy has egress rules, unless policyTypes says otherwise.
func policyTypes(pol *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(pol.Spec.PolicyTypes) == 0 {
		return true, len(pol.Spec.Egress) > 0
	}
	for _, t := range pol.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// addPolicy isolates the policy's target pods and gives them its grants.
// It reports whether the policy selects any target.
func (c *compiler) addPolicy(pol *networkingv1.NetworkPolicy, target func(*corev1.Pod) bool) bool {
	name := pol.Namespace + "/" + pol.Name
	sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
	if err != nil {
		klog.Errorf("network policy %s: pod selector: %v; the policy is ignored until it is fixed", name, err)
		return false
	}
	ingress, egress := policyTypes(pol)
	selected := false
	for _, p := range c.byNS[pol.Namespace] {
		if !sel.Matches(labels.Set(p.Labels)) || (target != nil && !target(p)) {
			continue
		}
		selected = true
		if ingress {
			c.isolate(Ingress, p, name, c.ingressGrants(pol, p))
		}
		if egress {
			c.isolate(Egress, p, name, c.egressGrants(pol))
		}
	}
	return selected
}

func (c *compiler) isolate(d Direction, p *corev1.Pod, policy string, grants []*Grant) {
	for _, ip := range c.ips[p] {
		r := c.model.Rules[d][ip]
		if r == nil {
			r = &PodRules{Pod: c.model.Pods[ip], Isolated: true}
			c.model.Rules[d][ip] = r
		}
		r.Policies = append(r.Policies, policy)
		r.Grants = append(r.Grants, grants...)
	}
}

func (c *compiler) ingressGrants(pol *networkingv1.NetworkPolicy, target *corev1.Pod) []*Grant {
	var out []*Grant
	for i, rule := range pol.Spec.Ingress {
		ports, sig := resolvePorts(rule.Ports, target)
		key := fmt.Sprintf("%s/%s/%s/%d|%s", pol.Namespace, pol.Name, Ingress, i, sig)
		g := c.grants[key]
		if g == nil {
			g = &Grant{Policy: pol.Namespace + "/" + pol.Name, Rule: i, key: key}
			peers := c.peerRanges(pol.Namespace, rule.From)
			g.Entries = crossEntries(peers, ports, rule.Ports)
			c.grants[key] = g
		}
		out = append(out, g)
	}
	return out
}

func (c *compiler) egressGrants(pol *networkingv1.NetworkPolicy) []*Grant {
	var out []*Grant
	for i, rule := range pol.Spec.Egress {
		key := fmt.Sprintf("%s/%s/%s/%d", pol.Namespace, pol.Name, Egress, i)
		g := c.grants[key]
		if g == nil {
			g = &Grant{Policy: pol.Namespace + "/" + pol.Name, Rule: i, key: key}
			g.Entries = c.egressEntries(pol.Namespace, rule)
			c.grants[key] = g
		}
		out = append(out, g)
	}
	return out
}

// egressEntries: numbered ports apply to every peer address; a named port
// is resolved on each destination pod among the peers, as the API defines.
func (c *compiler) egressEntries(ns string, rule networkingv1.NetworkPolicyEgressRule) []Entry {
	peers := c.peerRanges(ns, rule.To)
	var numbered []networkingv1.NetworkPolicyPort
	var named []networkingv1.NetworkPolicyPort
	for _, p := range rule.Ports {
		if p.Port != nil && p.Port.Type == intstr.String {
			named = append(named, p)
		} else {
			numbered = append(numbered, p)
		}
	}
	var entries []Entry
	if len(numbered) > 0 || len(rule.Ports) == 0 {
		ports, _ := resolvePorts(numbered, nil)
		entries = crossEntries(peers, ports, numbered)
	}
	if len(named) == 0 {
		return entries
	}
	for _, p := range c.pods {
		for _, ip := range c.ips[p] {
			if !inRanges(peers, ip) {
				continue
			}
			ports, _ := resolvePorts(named, p)
			entries = append(entries, crossEntries([]IPRange{{ip, ip}}, ports, named)...)
		}
	}
	return entries
}

func inRanges(rs []IPRange, a netip.Addr) bool {
	for _, r := range rs {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// crossEntries pairs every peer range with every port range; a rule
// without ports allows every protocol and port.
func crossEntries(peers []IPRange, ports []PortRange, spec []networkingv1.NetworkPolicyPort) []Entry {
	var out []Entry
	for _, peer := range peers {
		if len(spec) == 0 {
			out = append(out, Entry{Peer: peer, AllPorts: true})
			continue
		}
		for _, p := range ports {
			out = append(out, Entry{Peer: peer, Port: p})
		}
	}
	return out
}

// resolvePorts turns the rule's ports into ranges; named ports are looked
// up in pod's container ports (a name pod does not declare matches
// nothing). The signature tells apart resolutions that differ.
func resolvePorts(spec []networkingv1.NetworkPolicyPort, pod *corev1.Pod) ([]PortRange, string) {
	var out []PortRange
	var sig []string
	for _, p := range spec {
		proto := TCP
		if p.Protocol != nil {
			proto = Proto(*p.Protocol)
		}
		switch {
		case p.Port == nil:
			out = append(out, PortRange{proto, 0, 65535})
		case p.Port.Type == intstr.String: // a named port
			if port, ok := namedPort(pod, p.Port.StrVal, proto); ok {
				out = append(out, PortRange{proto, port, port})
				sig = append(sig, fmt.Sprintf("%s=%d", p.Port.StrVal, port))
			}
		default:
			to := p.Port.IntVal
			if p.EndPort != nil && *p.EndPort >= to {
				to = *p.EndPort
			}
			out = append(out, PortRange{proto, uint16(p.Port.IntVal), uint16(to)})
		}
	}
	return out, strings.Join(sig, ",")
}

func namedPort(pod *corev1.Pod, name string, proto Proto) (uint16, bool) {
	if pod == nil {
		return 0, false
	}
	for _, ctr := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, cp := range ctr.Ports {
			p := Proto(cp.Protocol)
			if p == "" {
				p = TCP
			}
			if cp.Name == name && p == proto {
				return uint16(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

// peerRanges are the addresses a rule's peers cover; no peers means
// everyone. Rules with the same peers share the result.
func (c *compiler) peerRanges(ns string, peers []networkingv1.NetworkPolicyPeer) []IPRange {
	if len(peers) == 0 {
		return allAddrs()
	}
	key := peersKey(ns, peers)
	if rs, ok := c.peers[key]; ok {
		return rs
	}
	rs := c.computePeers(ns, peers)
	c.peers[key] = rs
	return rs
}

// peersKey identifies a list of peers; the namespace matters only to a
// pod selector without a namespace selector.
func peersKey(ns string, peers []networkingv1.NetworkPolicyPeer) string {
	var b strings.Builder
	for _, p := range peers {
		if p.PodSelector != nil && p.NamespaceSelector == nil {
			b.WriteString(ns)
			break
		}
	}
	for _, p := range peers {
		b.WriteString("|")
		if p.PodSelector != nil {
			b.WriteString("p:" + metav1.FormatLabelSelector(p.PodSelector))
		}
		if p.NamespaceSelector != nil {
			b.WriteString(";n:" + metav1.FormatLabelSelector(p.NamespaceSelector))
		}
		if p.IPBlock != nil {
			b.WriteString(";b:" + p.IPBlock.CIDR + "-" + strings.Join(p.IPBlock.Except, ","))
		}
	}
	return b.String()
}

func (c *compiler) computePeers(ns string, peers []networkingv1.NetworkPolicyPeer) []IPRange {
	var out []IPRange
	for _, peer := range peers {
		if peer.IPBlock != nil {
			out = append(out, ipBlock(peer.IPBlock)...)
			continue
		}
		for _, p := range c.selectPods(ns, peer) {
			for _, ip := range c.ips[p] {
				out = append(out, IPRange{ip, ip})
			}
		}
	}
	return mergeRanges(out)
}

func ipBlock(b *networkingv1.IPBlock) []IPRange {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		klog.Errorf("ipBlock cidr %q: %v; it matches nothing", b.CIDR, err)
		return nil
	}
	var except []netip.Prefix
	for _, e := range b.Except {
		if p, err := netip.ParsePrefix(e); err == nil {
			except = append(except, p)
		}
	}
	return blockRanges(cidr, except)
}

// selectPods applies a pod and/or namespace selector: a podSelector alone
// picks in the policy's namespace; a namespaceSelector picks namespaces,
// and the podSelector, when also set, pods within them.
func (c *compiler) selectPods(ns string, peer networkingv1.NetworkPolicyPeer) []*corev1.Pod {
	podSel := labels.Everything()
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			klog.Errorf("peer pod selector: %v; it matches nothing", err)
			return nil
		}
		podSel = s
	}
	var nsSel labels.Selector
	if peer.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			klog.Errorf("peer namespace selector: %v; it matches nothing", err)
			return nil
		}
		nsSel = s
	}
	var out []*corev1.Pod
	for pns, pods := range c.byNS {
		if nsSel == nil && pns != ns || nsSel != nil && !nsSel.Matches(c.nsLabels[pns]) {
			continue
		}
		for _, p := range pods {
			if podSel.Matches(labels.Set(p.Labels)) {
				out = append(out, p)
			}
		}
	}
	return out
}

// ListInput reads the cluster state straight from the API server (for
// flannelctl policy explain; flanneld's controller reads its caches). core
// and networking are REST clients for core/v1 and networking/v1: a
// clientset's (CoreV1().RESTClient()) or internal/kubeapi's, so that this
// package does not need the clientset.
func ListInput(ctx context.Context, core, networking rest.Interface) (Input, error) {
	var in Input
	pols := &networkingv1.NetworkPolicyList{}
	if err := networking.Get().Resource("networkpolicies").Do(ctx).Into(pols); err != nil {
		return in, fmt.Errorf("list networkpolicies: %w", err)
	}
	pods := &corev1.PodList{}
	if err := core.Get().Resource("pods").Do(ctx).Into(pods); err != nil {
		return in, fmt.Errorf("list pods: %w", err)
	}
	nss := &corev1.NamespaceList{}
	if err := core.Get().Resource("namespaces").Do(ctx).Into(nss); err != nil {
		return in, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range pols.Items {
		in.Policies = append(in.Policies, &pols.Items[i])
	}
	for i := range pods.Items {
		in.Pods = append(in.Pods, &pods.Items[i])
	}
	for i := range nss.Items {
		in.Namespaces = append(in.Namespaces, &nss.Items[i])
	}
	return in, nil
}
