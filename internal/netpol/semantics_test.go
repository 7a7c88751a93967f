package netpol

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type np = networkingv1.NetworkPolicySpec
type inRule = networkingv1.NetworkPolicyIngressRule
type egRule = networkingv1.NetworkPolicyEgressRule
type peer = networkingv1.NetworkPolicyPeer
type pport = networkingv1.NetworkPolicyPort

func TestSemantics(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	cases := []struct {
		name   string
		setup  func(w *world)
		probes []probe
	}{
		{"no policy allows all", func(w *world) {}, []probe{
			{"x/a", "y/b", 80, TCP, true}, {"z/c", "x/a", 81, UDP, true}}},
		{"default deny ingress", func(w *world) {
			w.policy("x", "deny", np{PolicyTypes: ingressOnly})
		}, []probe{
			{"y/a", "x/a", 80, TCP, false}, {"x/b", "x/a", 80, UDP, false},
			{"x/a", "y/a", 80, TCP, true}, {"y/a", "y/b", 80, TCP, true}}},
		{"default deny egress", func(w *world) {
			w.policy("x", "deny", np{PolicyTypes: egressOnly})
		}, []probe{
			{"x/a", "y/a", 80, TCP, false}, {"x/a", "x/b", 81, UDP, false}, {"y/a", "x/a", 80, TCP, true}}},
		{"podSelector peer in own namespace", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{{PodSelector: sel("pod", "b")}}}}})
		}, []probe{
			{"x/b", "x/a", 80, TCP, true}, {"y/b", "x/a", 80, TCP, false}, {"x/c", "x/a", 80, TCP, false},
			{"x/c", "x/b", 80, TCP, true}}},
		{"namespaceSelector peer", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{{NamespaceSelector: sel("ns", "y")}}}}})
		}, []probe{
			{"y/b", "x/a", 80, TCP, true}, {"y/c", "x/a", 81, UDP, true}, {"x/b", "x/a", 80, TCP, false}, {"z/a", "x/a", 80, TCP, false}}},
		{"namespace and pod selector in one peer", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{
				{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "b")}}}}})
		}, []probe{
			{"y/b", "x/a", 80, TCP, true}, {"y/c", "x/a", 80, TCP, false}, {"x/b", "x/a", 80, TCP, false}}},
		{"namespace or pod selector in two peers", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{
				{NamespaceSelector: sel("ns", "y")}, {PodSelector: sel("pod", "b")}}}}})
		}, []probe{
			{"y/c", "x/a", 80, TCP, true}, {"x/b", "x/a", 80, TCP, true}, {"z/b", "x/a", 80, TCP, false}, {"x/c", "x/a", 80, TCP, false}}},
		{"empty namespaceSelector is every namespace", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{
				{NamespaceSelector: sel(), PodSelector: sel("pod", "c")}}}}})
		}, []probe{
			{"z/c", "x/a", 80, TCP, true}, {"x/c", "x/a", 80, TCP, true}, {"z/b", "x/a", 80, TCP, false}}},
		{"matchExpressions", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{{
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "ns", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x", "y"}}}}}}}}})
		}, []probe{{"z/b", "x/a", 80, TCP, true}, {"y/b", "x/a", 80, TCP, false}}},
		{"ipBlock with except", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), PolicyTypes: egressOnly, Egress: []egRule{{To: []peer{
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16", Except: []string{"10.244.3.0/24", "10.244.2.11/32"}}}}}}})
		}, []probe{
			{"x/a", "y/a", 80, TCP, true}, {"x/a", "y/b", 80, TCP, false}, {"x/a", "z/a", 80, UDP, false}, {"x/a", "x/b", 80, TCP, true}}},
		{"address in except allowed by another peer", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), PolicyTypes: egressOnly, Egress: []egRule{{To: []peer{
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16", Except: []string{"10.244.2.0/24"}}},
				{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "b")}}}}})
		}, []probe{{"x/a", "y/b", 80, TCP, true}, {"x/a", "y/c", 80, TCP, false}}},
		{"ports and protocols", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{Ports: []pport{
				{Port: port(80)}, {Protocol: proto(corev1.ProtocolUDP), Port: port(81)}}}}})
		}, []probe{
			{"y/a", "x/a", 80, TCP, true}, {"y/a", "x/a", 80, UDP, false}, {"y/a", "x/a", 81, UDP, true}, {"y/a", "x/a", 81, TCP, false}}},
		{"endPort range", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{Ports: []pport{
				{Port: port(80), EndPort: i32(90)}}}}})
		}, []probe{
			{"y/a", "x/a", 80, TCP, true}, {"y/a", "x/a", 90, TCP, true}, {"y/a", "x/a", 91, TCP, false}, {"y/a", "x/a", 85, UDP, false}}},
		{"protocol without port is all its ports", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{Ports: []pport{{Protocol: proto(corev1.ProtocolUDP)}}}}})
		}, []probe{{"y/a", "x/a", 12345, UDP, true}, {"y/a", "x/a", 80, TCP, false}}},
		{"SCTP is not TCP", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{Ports: []pport{
				{Protocol: proto(corev1.ProtocolSCTP), Port: port(80)}}}}})
		}, []probe{{"y/a", "x/a", 80, SCTP, true}, {"y/a", "x/a", 80, TCP, false}, {"y/a", "x/a", 80, UDP, false}}},
		{"named ingress port resolved on the destination", func(w *world) {
			w.addPod("x", "d", netip.MustParseAddr("10.244.1.20"), []corev1.ContainerPort{{Name: "serve-81-tcp", ContainerPort: 8081}}).Labels["pod"] = "a"
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{Ports: []pport{{Port: named("serve-81-tcp")}}}}})
			// x/d is labelled pod=a but serves 8081 as "serve-81-tcp".
			w.ips["x/d"] = netip.MustParseAddr("10.244.1.20")
		}, []probe{
			{"y/a", "x/a", 81, TCP, true}, {"y/a", "x/a", 8081, TCP, false},
			{"y/a", "x/d", 8081, TCP, true}, {"y/a", "x/d", 81, TCP, false}, {"y/a", "x/a", 81, UDP, false}}},
		{"named egress port resolved on the destination", func(w *world) {
			w.addPod("y", "d", netip.MustParseAddr("10.244.2.20"), []corev1.ContainerPort{{Name: "serve-80-udp", ContainerPort: 8080, Protocol: corev1.ProtocolUDP}})
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), PolicyTypes: egressOnly, Egress: []egRule{{Ports: []pport{
				{Protocol: proto(corev1.ProtocolUDP), Port: named("serve-80-udp")}}}}})
		}, []probe{
			{"x/a", "y/a", 80, UDP, true}, {"x/a", "y/d", 8080, UDP, true}, {"x/a", "y/d", 80, UDP, false}, {"x/a", "y/a", 80, TCP, false}}},
		{"policyTypes default: egress rules make egress policy", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Egress: []egRule{{To: []peer{{PodSelector: sel("pod", "b")}}}}})
		}, []probe{
			{"x/a", "x/b", 80, TCP, true}, {"x/a", "x/c", 80, TCP, false}, {"y/a", "x/a", 80, TCP, false}}},
		{"policyTypes default: ingress only without egress rules", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{{PodSelector: sel("pod", "b")}}}}})
		}, []probe{{"x/a", "z/c", 80, TCP, true}, {"x/c", "x/a", 80, TCP, false}}},
		{"policyTypes Egress ignores ingress rules", func(w *world) {
			w.policy("x", "p", np{PodSelector: *sel("pod", "a"), PolicyTypes: egressOnly,
				Ingress: []inRule{{From: []peer{{PodSelector: sel("pod", "b")}}}}})
		}, []probe{{"x/c", "x/a", 80, TCP, true}, {"x/a", "x/b", 80, TCP, false}}},
		{"union of policies", func(w *world) {
			w.policy("x", "p1", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{{PodSelector: sel("pod", "b")}}}}})
			w.policy("x", "p2", np{PodSelector: *sel(), Ingress: []inRule{{From: []peer{{PodSelector: sel("pod", "c")}}}}})
		}, []probe{{"x/b", "x/a", 80, TCP, true}, {"x/c", "x/a", 80, TCP, true}, {"x/b", "x/c", 80, TCP, false}}},
		{"egress and ingress both needed", func(w *world) {
			w.policy("x", "out", np{PodSelector: *sel("pod", "a"), PolicyTypes: egressOnly, Egress: []egRule{{}}})
			w.policy("y", "in", np{PodSelector: *sel("pod", "b"), PolicyTypes: ingressOnly})
		}, []probe{{"x/a", "y/b", 80, TCP, false}, {"x/a", "y/c", 80, TCP, true}}},
		{"hostNetwork pods are neither isolated nor peers", func(w *world) {
			h := w.addPod("x", "h", netip.MustParseAddr("198.51.100.2"), nil)
			h.Spec.HostNetwork, h.Labels["pod"] = true, "b"
			w.policy("x", "p", np{PodSelector: *sel(), Ingress: []inRule{{From: []peer{{PodSelector: sel("pod", "b")}}}}})
		}, []probe{{"x/h", "x/a", 80, TCP, false}, {"x/b", "x/a", 80, TCP, true}, {"x/a", "x/h", 80, TCP, true}}},
		{"finished pods are ignored", func(w *world) {
			f := w.addPod("y", "done", netip.MustParseAddr("10.244.2.10"), nil) // y/a's address, reused
			f.Status.Phase, f.Labels["pod"] = corev1.PodSucceeded, "a"
			w.policy("y", "p", np{PodSelector: *sel("pod", "a"), PolicyTypes: ingressOnly})
			w.policy("x", "q", np{PodSelector: *sel(), Ingress: []inRule{{From: []peer{{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "a")}}}}})
		}, []probe{{"x/a", "y/a", 80, TCP, false}, {"y/a", "x/b", 80, TCP, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			tc.setup(w)
			w.check(t, tc.probes)
		})
	}
}

// Only target pods are isolated: a node compiles its own pods.
func TestCompileTargets(t *testing.T) {
	w := newWorld()
	w.policy("x", "deny", np{PolicyTypes: both})
	m := Compile(w.in, func(p *corev1.Pod) bool { return p.Name == "a" })
	if got := len(m.Rules[Ingress]); got != 1 {
		t.Errorf("%d pods isolated for ingress, want 1 (x/a)", got)
	}
	if r := m.Rules[Egress][w.ips["x/a"]]; r == nil || r.Pod.String() != "x/a" {
		t.Errorf("x/a egress rules %+v", r)
	}
	if d := m.Decide(w.ips["y/a"], w.ips["x/b"], TCP, 80); !d.Allowed() {
		t.Errorf("x/b is not a target but is isolated")
	}
	if m.PolicyCount != 1 {
		t.Errorf("PolicyCount %d, want 1", m.PolicyCount)
	}
}

func TestExplain(t *testing.T) {
	w := newWorld()
	w.policy("x", "allow-b", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{}, {From: []peer{{PodSelector: sel("pod", "b")}}}}})
	w.policy("x", "deny-all", np{PodSelector: *sel(), PolicyTypes: ingressOnly})
	m := Compile(w.in, nil)
	got := m.Decide(w.ips["x/b"], w.ips["x/a"], TCP, 80).Explain("x/b", "x/a:80/TCP")
	for _, want := range []string{"ALLOW: x/b -> x/a:80/TCP", "egress of x/b: allowed: no NetworkPolicy",
		"x/allow-b spec.ingress[0], x/allow-b spec.ingress[1]", "isolated by x/allow-b, x/deny-all"} {
		if !strings.Contains(got, want) {
			t.Errorf("explanation lacks %q:\n%s", want, got)
		}
	}
	got = m.Decide(w.ips["x/a"], w.ips["x/c"], UDP, 81).Explain("x/a", "x/c")
	if !strings.HasPrefix(got, "DENY") || !strings.Contains(got, "denied: isolated by x/deny-all and no ingress rule") {
		t.Errorf("explanation:\n%s", got)
	}
}
