package netpol

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// scaleClusterPolicies adds n ClusterNetworkPolicies to in (scaleWorld's
// namespaces, teams and apps): three in four in the Admin tier, the rest
// Baseline; subjects are a team's namespaces or an app across a team;
// rules accept, deny or pass from another team or app on a port or a
// named port, and (one in four) deny egress to a network.
func scaleClusterPolicies(in *Input, n int) {
	const apps = 20
	for i := range n {
		team := func(k int) *metav1.LabelSelector { return sel("team", fmt.Sprintf("t%d", (i+k)%5)) }
		app := func(k int) *metav1.LabelSelector { return sel("app", fmt.Sprintf("app%d", (i+k)%apps)) }
		spec := cnpv1.ClusterNetworkPolicySpec{Tier: cnpv1.AdminTier, Priority: int32(i % 50)}
		actions := []cnpv1.ClusterNetworkPolicyRuleAction{accept, deny, pass}
		if i%4 == 3 {
			spec.Tier, actions = cnpv1.BaselineTier, []cnpv1.ClusterNetworkPolicyRuleAction{accept, deny, deny}
		}
		if i%2 == 0 {
			spec.Subject.Namespaces = team(0)
		} else {
			spec.Subject.Pods = &cnpv1.NamespacedPod{NamespaceSelector: *team(0), PodSelector: *app(0)}
		}
		spec.Ingress = []cnpIn{
			{Action: actions[0], From: []cnpv1.ClusterNetworkPolicyIngressPeer{{Namespaces: team(1)}}, Protocols: []cnpProto{tcpPort(8080 + int32(i%3))}},
			{Action: actions[1], From: []cnpv1.ClusterNetworkPolicyIngressPeer{{Pods: &cnpv1.NamespacedPod{NamespaceSelector: *team(2), PodSelector: *app(1)}}},
				Protocols: []cnpProto{{DestinationNamedPort: "serve-8080-tcp"}}},
			{Action: actions[2], From: []cnpv1.ClusterNetworkPolicyIngressPeer{{Namespaces: sel()}}},
		}
		if i%4 == 0 {
			spec.Egress = []cnpEg{{Action: deny, To: []cnpv1.ClusterNetworkPolicyEgressPeer{{Networks: []cnpv1.CIDR{cnpv1.CIDR(fmt.Sprintf("192.168.%d.0/24", i%256))}}}}}
		}
		in.ClusterPolicies = append(in.ClusterPolicies, &cnpv1.ClusterNetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cnp%d", i)}, Spec: spec})
	}
}

// 100 ClusterNetworkPolicies over 5000 pods compile and load in under 2 s
// of CPU for a node with 250 of the pods, as NetworkPolicies do
// (TestScaleCompileAndLoad). Measured and logged, not held to it: the
// same beside the 1000 NetworkPolicies (every pod its own class then),
// and one node with all 5000 pods.
func TestScaleClusterPolicies(t *testing.T) {
	cnpOnly := scaleWorld(5000, 0)
	scaleClusterPolicies(&cnpOnly, 100)
	both := scaleWorld(5000, 1000)
	scaleClusterPolicies(&both, 100)
	node3 := func(p *corev1.Pod) bool { return p.Spec.NodeName == "node3" }
	for _, c := range []struct {
		name   string
		in     Input
		target func(*corev1.Pod) bool
		limit  time.Duration
	}{
		{"100 cluster policies, 250 local pods", cnpOnly, node3, 2 * time.Second},
		{"100 cluster policies and 1000 NetworkPolicies, 250 local pods", both, node3, 0},
		{"100 cluster policies, all 5000 pods local", cnpOnly, nil, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			// scaleRun's second sync deletes a NetworkPolicy; with none,
			// it deletes a cluster policy.
			in := c.in
			if len(in.Policies) == 0 {
				in.Policies = []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns0", Name: "none"},
					Spec: np{PodSelector: *sel("selects", "nothing")}}}
			}
			inNetns(t, func() error { return scaleRun(t, in, c.target, c.limit) })
		})
	}
}
