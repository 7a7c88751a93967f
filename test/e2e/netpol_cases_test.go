package e2e

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// npStep changes the cluster, then the whole matrix must equal want.
type npStep struct {
	apply func(ctx context.Context, l *npCluster)
	want  expectFn
}

// npCase is one case of the Kubernetes NetworkPolicy e2e suite
// (test/e2e/network/netpol/network_policy.go), named as there. Upstream
// checks one port and protocol per step; here every step checks TCP and
// UDP on 80 and 81 between all nine pods, so each truth table below
// states the expectation for all four.
type npCase struct {
	name  string
	steps []npStep
}

type (
	npSpec = networkingv1.NetworkPolicySpec
	npIn   = networkingv1.NetworkPolicyIngressRule
	npEg   = networkingv1.NetworkPolicyEgressRule
	npPeer = networkingv1.NetworkPolicyPeer
	npPort = networkingv1.NetworkPolicyPort
)

var (
	npIngress = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	npEgress  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	npBoth    = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func lsel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func lexpr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

// nsName selects a namespace by the label the API server sets.
func nsName(ns string) *metav1.LabelSelector { return lsel("kubernetes.io/metadata.name", ns) }

func pnum(proto corev1.Protocol, port int) npPort {
	v := intstr.FromInt32(int32(port))
	return npPort{Protocol: &proto, Port: &v}
}

func pnamed(name string) npPort {
	v := intstr.FromString(name)
	return npPort{Port: &v}
}

func pproto(proto corev1.Protocol) npPort { return npPort{Protocol: &proto} }

// policy is a step that creates policies ns/name.
func policy(ns, name string, spec npSpec) func(context.Context, *npCluster) {
	return func(ctx context.Context, l *npCluster) { l.createPolicy(ctx, ns, name, spec) }
}

func tcpOn(port int) func(int, string) bool {
	return func(p int, proto string) bool { return p == port && proto == "tcp" }
}

// ingressTo: traffic to the pods matching to passes only if ok says so.
func ingressTo(to string, ok func(from *npPod, port int, proto string) bool) expectFn {
	return func(f, t *npPod, port int, proto string) bool { return !t.is(to) || ok(f, port, proto) }
}

// egressFrom: traffic from the pods matching from passes only if ok says so.
func egressFrom(from string, ok func(to *npPod, port int, proto string) bool) expectFn {
	return func(f, t *npPod, port int, proto string) bool { return !f.is(from) || ok(t, port, proto) }
}

func never(*npPod, int, string) bool { return false }

func fromPods(pats ...string) func(*npPod, int, string) bool {
	return func(p *npPod, _ int, _ string) bool { return p.is(pats...) }
}

func onPort(ok func(int, string) bool) func(*npPod, int, string) bool {
	return func(_ *npPod, port int, proto string) bool { return ok(port, proto) }
}

func npCases() []npCase {
	return append(npIngressCases(), append(npEgressCases(), npChangeCases()...)...)
}

func npIngressCases() []npCase {
	return []npCase{
		{"should support a 'default-deny-ingress' policy", []npStep{{
			policy("x", "deny-ingress", npSpec{PolicyTypes: npIngress}), ingressTo("x/*", never)}}},
		{"should support a 'default-deny-all' policy", []npStep{{
			policy("x", "deny-all", npSpec{PolicyTypes: npBoth}),
			func(f, t *npPod, _ int, _ string) bool { return f.ns != "x" && t.ns != "x" }}}},
		{"should enforce policy to allow traffic from pods within server namespace based on PodSelector", []npStep{{
			policy("x", "x-a-allows-x-b", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{{PodSelector: lsel("pod", "b")}}}}}),
			ingressTo("x/a", fromPods("x/b"))}}},
		{"should enforce policy to allow ingress traffic for a target", []npStep{{
			func(ctx context.Context, l *npCluster) {
				l.createPolicy(ctx, "x", "deny-all", npSpec{PolicyTypes: npIngress})
				l.createPolicy(ctx, "x", "allow-all-to-a", npSpec{PodSelector: *lsel("pod", "a"),
					Ingress: []npIn{{From: []npPeer{{PodSelector: lsel(), NamespaceSelector: lsel()}}}}})
			},
			func(_, t *npPod, _ int, _ string) bool { return !t.is("x/b", "x/c") }}}},
		{"should enforce policy to allow ingress traffic from pods in all namespaces", []npStep{{
			policy("x", "allow-from-another-ns", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{{NamespaceSelector: lsel()}}}}}),
			allowAll}}},
		{"should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", []npStep{{
			policy("x", "allow-client-a-via-ns-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{{NamespaceSelector: nsName("y")}}}}}),
			ingressTo("x/a", fromPods("y/*"))}}},
		{"should enforce policy based on PodSelector with MatchExpressions", []npStep{{
			policy("x", "x-a-allows-x-b", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{{PodSelector: lexpr("pod", metav1.LabelSelectorOpIn, "b")}}}}}),
			ingressTo("x/a", fromPods("x/b"))}}},
		{"should enforce policy based on NamespaceSelector with MatchExpressions", []npStep{{
			policy("x", "allow-ns-y-match-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{
				{NamespaceSelector: lexpr("kubernetes.io/metadata.name", metav1.LabelSelectorOpIn, "y")}}}}}),
			ingressTo("x/a", fromPods("y/*"))}}},
		{"should enforce policy based on PodSelector or NamespaceSelector", []npStep{{
			policy("x", "allow-ns-y-match-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{
				{NamespaceSelector: lexpr("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "x")}, {PodSelector: lsel("pod", "b")}}}}}),
			ingressTo("x/a", fromPods("y/*", "z/*", "x/b"))}}},
		{"should enforce policy based on PodSelector and NamespaceSelector", []npStep{{
			policy("x", "allow-ns-y-podselector-and-nsselector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{
				{NamespaceSelector: lexpr("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "x"), PodSelector: lsel("pod", "b")}}}}}),
			ingressTo("x/a", fromPods("y/b", "z/b"))}}},
		{"should enforce policy based on Multiple PodSelectors and NamespaceSelectors", []npStep{{
			policy("x", "allow-ns-y-z-pod-b-c", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{
				{NamespaceSelector: lexpr("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "x"),
					PodSelector: lexpr("pod", metav1.LabelSelectorOpIn, "b", "c")}}}}}),
			ingressTo("x/a", fromPods("y/b", "y/c", "z/b", "z/c"))}}},
		{"should enforce policy based on any PodSelectors", []npStep{{
			policy("x", "allow-ns-x-pod-b-c", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{
				{PodSelector: lsel("pod", "b")}, {PodSelector: lsel("pod", "c")}}}}}),
			ingressTo("x/a", fromPods("x/b", "x/c"))}}},
		{"should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", []npStep{{
			policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{
				{NamespaceSelector: nsName("y"), PodSelector: lsel("pod", "a")}}}}}),
			ingressTo("x/a", fromPods("y/a"))}}},
		{"should enforce policy based on Ports", []npStep{{
			policy("x", "allow-client-a-via-ns-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{
				From: []npPeer{{NamespaceSelector: nsName("y")}}, Ports: []npPort{pnum(corev1.ProtocolTCP, 81)}}}}),
			ingressTo("x/a", func(f *npPod, port int, proto string) bool { return f.ns == "y" && tcpOn(81)(port, proto) })}}},
		{"should enforce multiple, stacked policies with overlapping podSelectors", []npStep{
			{policy("x", "allow-client-a-via-ns-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{
				From: []npPeer{{NamespaceSelector: nsName("y")}}, Ports: []npPort{pnum(corev1.ProtocolTCP, 81)}}}}),
				ingressTo("x/a", func(f *npPod, port int, proto string) bool { return f.ns == "y" && tcpOn(81)(port, proto) })},
			{policy("x", "allow-client-a-via-ns-selector-80", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{
				From: []npPeer{{NamespaceSelector: nsName("y")}}, Ports: []npPort{pnum(corev1.ProtocolTCP, 80)}}}}),
				ingressTo("x/a", func(f *npPod, _ int, proto string) bool { return f.ns == "y" && proto == "tcp" })},
		}},
		{"should support allow-all policy", []npStep{{
			policy("x", "allow-all", npSpec{PodSelector: *lsel(), Ingress: []npIn{{}}}), allowAll}}},
		{"should allow ingress access on one named port", []npStep{{
			policy("x", "allow-all", npSpec{PodSelector: *lsel(), Ingress: []npIn{{Ports: []npPort{pnamed("serve-81-tcp")}}}}),
			ingressTo("x/*", onPort(tcpOn(81)))}}},
		{"should allow ingress access from namespace on one named port", []npStep{{
			policy("x", "allow-client-a-via-ns-selector-80", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{
				From: []npPeer{{NamespaceSelector: nsName("y")}}, Ports: []npPort{pnamed("serve-80-tcp")}}}}),
			ingressTo("x/a", func(f *npPod, port int, proto string) bool { return f.ns == "y" && tcpOn(80)(port, proto) })}}},
		{"should deny ingress from pods on other namespaces", []npStep{{
			policy("x", "deny-empty-policy", npSpec{PodSelector: *lsel(), Ingress: []npIn{{From: []npPeer{{PodSelector: lsel()}}}}}),
			ingressTo("x/*", fromPods("x/*"))}}},
		{"should enforce ingress policy allowing any port traffic to a server on a specific protocol", []npStep{{
			policy("x", "allow-ingress-by-proto", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{Ports: []npPort{pproto(corev1.ProtocolTCP)}}}}),
			ingressTo("x/a", onPort(func(_ int, proto string) bool { return proto == "tcp" }))}}},
		{"should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", []npStep{{
			func(ctx context.Context, l *npCluster) {
				l.createPolicy(ctx, "x", "deny-ingress", npSpec{PolicyTypes: npIngress})
				l.createPolicy(ctx, "x", "allow-only-sctp-ingress-on-port-81", npSpec{PodSelector: *lsel("pod", "a"),
					Ingress: []npIn{{Ports: []npPort{pnum(corev1.ProtocolSCTP, 81)}}}})
			},
			ingressTo("x/*", never)}}},
		{"should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP", []npStep{{
			policy("x", "allow-only-sctp-ingress-on-port-80", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{Ports: []npPort{pnum(corev1.ProtocolSCTP, 80)}}}}),
			ingressTo("x/a", never)}}},
		{"should not allow access by TCP when a policy specifies only UDP", []npStep{{
			policy("x", "allow-only-udp-ingress-on-port-81", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{Ports: []npPort{pnum(corev1.ProtocolUDP, 81)}}}}),
			ingressTo("x/a", onPort(func(port int, proto string) bool { return port == 81 && proto == "udp" }))}}},
		{"should enforce policy based on Ports range [endPort]", []npStep{{
			policy("x", "allow-tcp-79-80", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{
				Ports: []npPort{func() npPort { p := pnum(corev1.ProtocolTCP, 79); end := int32(80); p.EndPort = &end; return p }()}}}}),
			ingressTo("x/a", onPort(tcpOn(80)))}}},
	}
}

func npEgressCases() []npCase {
	return []npCase{
		{"should allow egress access on one named port", []npStep{{
			policy("x", "allow-egress", npSpec{PodSelector: *lsel(), PolicyTypes: npEgress, Egress: []npEg{{Ports: []npPort{pnamed("serve-80-tcp")}}}}),
			egressFrom("x/*", onPort(tcpOn(80)))}}},
		{"should deny egress from pods based on PodSelector", []npStep{{
			policy("x", "deny-egress-pod-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress}),
			egressFrom("x/a", never)}}},
		{"should deny egress from all pods in a namespace", []npStep{{
			policy("x", "deny-egress-ns-x", npSpec{PodSelector: *lsel(), PolicyTypes: npEgress}),
			egressFrom("x/*", never)}}},
		{"should work with Ingress, Egress specified together", []npStep{{
			policy("x", "allow-client-a-via-pod-selector", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npBoth,
				Ingress: []npIn{{From: []npPeer{{PodSelector: lsel("pod", "b")}}}},
				Egress:  []npEg{{Ports: []npPort{pnum(corev1.ProtocolTCP, 80)}}}}),
			func(f, t *npPod, port int, proto string) bool {
				return ingressTo("x/a", fromPods("x/b"))(f, t, port, proto) && egressFrom("x/a", onPort(tcpOn(80)))(f, t, port, proto)
			}}}},
		{"should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", []npStep{{
			func(ctx context.Context, l *npCluster) {
				l.createPolicy(ctx, "x", "allow-to-ns-y-pod-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress,
					Egress: []npEg{{To: []npPeer{{NamespaceSelector: nsName("y"), PodSelector: lsel("pod", "a")}}}}})
				from := []npPeer{{NamespaceSelector: nsName("x"), PodSelector: lsel("pod", "a")}}
				for _, pod := range []string{"a", "b"} {
					l.createPolicy(ctx, "y", "allow-from-xa-on-y"+pod+"-match-selector", npSpec{PodSelector: *lsel("pod", pod),
						Ingress: []npIn{{From: from}}})
				}
			},
			func(f, t *npPod, port int, proto string) bool {
				return egressFrom("x/a", fromPods("y/a"))(f, t, port, proto) &&
					(!t.is("y/a", "y/b") || f.is("x/a"))
			}}}},
		{"should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", []npStep{{
			policy("x", "allow-to-ns-y-pod-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress,
				Egress: []npEg{{To: []npPeer{{NamespaceSelector: nsName("y"), PodSelector: lsel("pod", "a")}}}}}),
			egressFrom("x/a", fromPods("y/a"))}}},
		{"should allow egress access to server in CIDR block", []npStep{{
			func(ctx context.Context, l *npCluster) {
				l.createPolicy(ctx, "x", "allow-client-a-via-cidr-egress-rule", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress,
					Egress: []npEg{{To: []npPeer{{IPBlock: &networkingv1.IPBlock{CIDR: l.pod("y/b").tbPod.IP.String() + "/32"}}}}}})
			},
			egressFrom("x/a", fromPods("y/b"))}}},
		{"should enforce except clause while egress access to server in CIDR block", []npStep{{
			func(ctx context.Context, l *npCluster) {
				l.createPolicy(ctx, "x", "allow-client-a-via-cidr-egress-rule", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress,
					Egress: []npEg{{To: []npPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16",
						Except: []string{l.pod("x/b").tbPod.IP.String() + "/32"}}}}}}})
			},
			egressFrom("x/a", func(t *npPod, _ int, _ string) bool { return !t.is("x/b") })}}},
		{"should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", []npStep{
			{func(ctx context.Context, l *npCluster) {
				l.createPolicy(ctx, "x", "allow-client-a-via-cidr-egress-rule", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress,
					Egress: []npEg{{To: []npPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16",
						Except: []string{l.pod("x/b").tbPod.IP.String() + "/32"}}}}}}})
			}, egressFrom("x/a", func(t *npPod, _ int, _ string) bool { return !t.is("x/b") })},
			{func(ctx context.Context, l *npCluster) {
				l.updatePolicy(ctx, "x", "allow-client-a-via-cidr-egress-rule", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress,
					Egress: []npEg{{To: []npPeer{{IPBlock: &networkingv1.IPBlock{CIDR: l.pod("x/b").tbPod.IP.String() + "/32"}}}}}})
			}, egressFrom("x/a", fromPods("x/b"))},
		}},
	}
}

func npChangeCases() []npCase {
	portEgress80 := npSpec{PodSelector: *lsel(), PolicyTypes: npEgress, Egress: []npEg{{Ports: []npPort{pnum(corev1.ProtocolTCP, 80)}}}}
	return []npCase{
		{"should enforce updated policy", []npStep{
			{policy("x", "allow-all-mutate-to-deny-all", npSpec{PodSelector: *lsel(), Ingress: []npIn{{}}}), allowAll},
			{func(ctx context.Context, l *npCluster) {
				l.updatePolicy(ctx, "x", "allow-all-mutate-to-deny-all", npSpec{PodSelector: *lsel(), Ingress: []npIn{}})
			}, ingressTo("x/*", never)},
		}},
		{"should allow ingress access from updated namespace", []npStep{
			{policy("x", "allow-client-a-via-ns-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{{NamespaceSelector: lsel("ns2", "updated")}}}}}),
				ingressTo("x/a", never)},
			{func(ctx context.Context, l *npCluster) {
				l.setLabels(ctx, "y", map[string]string{"ns": "y", "ns2": "updated"})
			},
				ingressTo("x/a", fromPods("y/*"))},
		}},
		{"should allow ingress access from updated pod", []npStep{
			{policy("x", "allow-client-a-via-pod-selector", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{{PodSelector: lsel("pod", "b", "pod2", "updated")}}}}}),
				ingressTo("x/a", never)},
			{func(ctx context.Context, l *npCluster) {
				l.setLabels(ctx, "x/b", map[string]string{"pod": "b", "pod2": "updated"})
			},
				ingressTo("x/a", fromPods("x/b"))},
		}},
		{"should deny ingress access to updated pod", []npStep{
			{policy("x", "deny-ingress-via-label-selector", npSpec{PodSelector: *lsel("target", "isolated"), PolicyTypes: npIngress}), allowAll},
			{func(ctx context.Context, l *npCluster) {
				l.setLabels(ctx, "x/a", map[string]string{"pod": "a", "target": "isolated"})
			},
				ingressTo("x/a", never)},
		}},
		{"should enforce multiple ingress policies with ingress allow-all policy taking precedence", []npStep{
			{policy("x", "allow-ingress-port-80", npSpec{PodSelector: *lsel(), Ingress: []npIn{{Ports: []npPort{pnum(corev1.ProtocolTCP, 80)}}}}),
				ingressTo("x/*", onPort(tcpOn(80)))},
			{policy("x", "allow-ingress", npSpec{PodSelector: *lsel(), Ingress: []npIn{{}}}), allowAll},
		}},
		{"should enforce multiple egress policies with egress allow-all policy taking precedence", []npStep{
			{policy("x", "allow-egress-port-80", portEgress80), egressFrom("x/*", onPort(tcpOn(80)))},
			{policy("x", "allow-egress", npSpec{PodSelector: *lsel(), PolicyTypes: npEgress, Egress: []npEg{{}}}), allowAll},
		}},
		{"should stop enforcing policies after they are deleted", []npStep{
			{policy("x", "deny-all", npSpec{PodSelector: *lsel(), PolicyTypes: npBoth}),
				func(f, t *npPod, _ int, _ string) bool { return f.ns != "x" && t.ns != "x" }},
			{func(ctx context.Context, l *npCluster) { l.deletePolicy(ctx, "x", "deny-all") }, allowAll},
		}},
		{"should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", []npStep{
			{policy("x", "allow-egress-for-target", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npEgress, Egress: []npEg{{}}}), allowAll},
			{policy("x", "deny-ingress-via-label-selector", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npIngress}),
				ingressTo("x/a", never)},
		}},
	}
}

// npCaseName shortens a case name to a subtest name.
func npCaseName(i int, c npCase) string { return fmt.Sprintf("%02d %s", i+1, c.name) }
