package netpol

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

type cnpIn = cnpv1.ClusterNetworkPolicyIngressRule
type cnpEg = cnpv1.ClusterNetworkPolicyEgressRule
type cnpProto = cnpv1.ClusterNetworkPolicyProtocol

// cnp adds a ClusterNetworkPolicy whose subject is the namespaces nsSel
// selects.
func (w *world) cnp(name string, tier cnpv1.Tier, prio int32, nsSel *metav1.LabelSelector, in []cnpIn, eg []cnpEg) {
	w.in.ClusterPolicies = append(w.in.ClusterPolicies, &cnpv1.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: cnpv1.ClusterNetworkPolicySpec{Tier: tier, Priority: prio,
			Subject: cnpv1.ClusterNetworkPolicySubject{Namespaces: nsSel}, Ingress: in, Egress: eg},
	})
}

func fromNS(action cnpv1.ClusterNetworkPolicyRuleAction, ns string, protos ...cnpProto) cnpIn {
	return cnpIn{Action: action, From: []cnpv1.ClusterNetworkPolicyIngressPeer{{Namespaces: sel("ns", ns)}}, Protocols: protos}
}

func tcpPort(p int32) cnpProto {
	return cnpProto{TCP: &cnpv1.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1.Port{Number: p}}}
}

const (
	accept = cnpv1.ClusterNetworkPolicyRuleActionAccept
	deny   = cnpv1.ClusterNetworkPolicyRuleActionDeny
	pass   = cnpv1.ClusterNetworkPolicyRuleActionPass
)

// cnpCases are the tier-ordering cases, shared by the model's test and the
// kernel's (which checks the loaded table says the same).
var cnpCases = []struct {
	name   string
	setup  func(w *world)
	probes []probe
}{
	{"admin deny beats a NetworkPolicy allow", func(w *world) {
		w.cnp("deny-y", cnpv1.AdminTier, 10, sel("ns", "x"), []cnpIn{fromNS(deny, "y")}, nil)
		w.policy("x", "allow-all", np{PodSelector: *sel(), Ingress: []inRule{{}}})
	}, []probe{{"y/a", "x/a", 80, TCP, false}, {"z/a", "x/a", 80, TCP, true}, {"y/a", "z/a", 80, TCP, true}}},
	{"pass falls through to NetworkPolicy", func(w *world) {
		w.cnp("pass-y", cnpv1.AdminTier, 5, sel("ns", "x"), []cnpIn{fromNS(pass, "y")}, nil)
		w.cnp("deny-y", cnpv1.AdminTier, 10, sel("ns", "x"), []cnpIn{fromNS(deny, "y"), fromNS(deny, "z")}, nil)
		w.policy("x", "only-b", np{PodSelector: *sel(), Ingress: []inRule{{From: []peer{{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "b")}}}}})
	}, []probe{{"y/b", "x/a", 80, TCP, true}, {"y/a", "x/a", 80, TCP, false}, {"z/b", "x/a", 80, TCP, false}}},
	{"pass without NetworkPolicy falls to baseline", func(w *world) {
		w.cnp("pass-y", cnpv1.AdminTier, 5, sel("ns", "x"), []cnpIn{fromNS(pass, "y")}, nil)
		w.cnp("base-deny", cnpv1.BaselineTier, 1, sel("ns", "x"), []cnpIn{fromNS(deny, "y")}, nil)
	}, []probe{{"y/b", "x/a", 80, TCP, false}, {"z/b", "x/a", 80, TCP, true}}},
	{"baseline deny overridden by a NetworkPolicy allow", func(w *world) {
		w.cnp("base-deny", cnpv1.BaselineTier, 1, sel(), []cnpIn{fromNS(deny, "y"), fromNS(deny, "z")}, nil)
		w.policy("x", "allow-y", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{{NamespaceSelector: sel("ns", "y")}}}}})
	}, []probe{{"y/b", "x/a", 80, TCP, true}, {"z/b", "x/a", 80, TCP, false}, {"y/b", "x/b", 80, TCP, false}, {"x/b", "x/a", 80, TCP, false}}},
	{"priority: lower number first", func(w *world) {
		w.cnp("b-accept", cnpv1.AdminTier, 20, sel("ns", "x"), []cnpIn{fromNS(accept, "y")}, nil)
		w.cnp("a-deny", cnpv1.AdminTier, 30, sel("ns", "x"), []cnpIn{fromNS(deny, "y")}, nil)
		w.cnp("c-deny-81", cnpv1.AdminTier, 10, sel("ns", "x"), []cnpIn{fromNS(deny, "y", tcpPort(81))}, nil)
	}, []probe{{"y/a", "x/a", 80, TCP, true}, {"y/a", "x/a", 81, TCP, false}, {"y/a", "x/a", 81, UDP, true}}},
	{"priority tie: by policy name", func(w *world) {
		w.cnp("b-accept", cnpv1.AdminTier, 10, sel("ns", "x"), []cnpIn{fromNS(accept, "y")}, nil)
		w.cnp("a-deny", cnpv1.AdminTier, 10, sel("ns", "x"), []cnpIn{fromNS(deny, "y")}, nil)
	}, []probe{{"y/a", "x/a", 80, TCP, false}}},
	{"rules of one policy in the order written", func(w *world) {
		w.cnp("p", cnpv1.AdminTier, 10, sel("ns", "x"), []cnpIn{fromNS(accept, "y", tcpPort(80)), fromNS(deny, "y")}, nil)
	}, []probe{{"y/a", "x/a", 80, TCP, true}, {"y/a", "x/a", 81, TCP, false}}},
	{"egress: networks, named port, admin accept still needs the destination's ingress", func(w *world) {
		w.cnp("eg", cnpv1.AdminTier, 10, sel("ns", "x"), nil, []cnpEg{
			{Action: accept, To: []cnpv1.ClusterNetworkPolicyEgressPeer{{Pods: &cnpv1.NamespacedPod{NamespaceSelector: *sel("ns", "y"), PodSelector: *sel()}}},
				Protocols: []cnpProto{{DestinationNamedPort: "serve-81-udp"}}},
			{Action: deny, To: []cnpv1.ClusterNetworkPolicyEgressPeer{{Networks: []cnpv1.CIDR{"10.244.0.0/16"}}}},
		})
		w.policy("y", "deny-b", np{PodSelector: *sel("pod", "b"), PolicyTypes: ingressOnly})
	}, []probe{{"x/a", "y/a", 81, UDP, true}, {"x/a", "y/a", 81, TCP, false}, {"x/a", "y/b", 81, UDP, false},
		{"x/a", "z/a", 80, TCP, false}, {"y/a", "z/a", 80, TCP, true}}},
	{"baseline accept beats nothing but the default, admin deny beats it", func(w *world) {
		w.cnp("base", cnpv1.BaselineTier, 1, sel(), []cnpIn{fromNS(accept, "y"), {Action: deny, From: []cnpv1.ClusterNetworkPolicyIngressPeer{{Namespaces: sel()}}}}, nil)
		w.cnp("admin", cnpv1.AdminTier, 1, sel("ns", "z"), []cnpIn{fromNS(deny, "y")}, nil)
	}, []probe{{"y/a", "x/a", 80, TCP, true}, {"x/b", "x/a", 80, TCP, false}, {"y/a", "z/a", 80, TCP, false}}},
}

func TestClusterNetworkPolicyTiers(t *testing.T) {
	for _, tc := range cnpCases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			tc.setup(w)
			w.check(t, tc.probes)
		})
	}
}

func TestClusterNetworkPolicyExplain(t *testing.T) {
	w := newWorld()
	cnpCases[1].setup(w)
	m := Compile(w.in, nil)
	got := m.Decide(w.ips["y/b"], w.ips["x/a"], TCP, 80).Explain("y/b", "x/a:80/TCP")
	for _, want := range []string{"ALLOW", "allowed by x/only-b spec.ingress[0]",
		"passed on by Admin tier ClusterNetworkPolicy pass-y (priority 5) spec.ingress[0]: Pass"} {
		if !strings.Contains(got, want) {
			t.Errorf("explanation lacks %q:\n%s", want, got)
		}
	}
	got = m.Decide(w.ips["z/b"], w.ips["x/a"], TCP, 80).Explain("z/b", "x/a")
	if want := "denied by Admin tier ClusterNetworkPolicy deny-y (priority 10) spec.ingress[1]: Deny"; !strings.Contains(got, want) {
		t.Errorf("explanation lacks %q:\n%s", want, got)
	}
}

// Each case's table loads into a real kernel, and replacing it by the
// next case's (an incremental update) equals a fresh load.
func TestClusterNetworkPolicyTable(t *testing.T) {
	inNetns(t, func() error {
		ctx := context.Background()
		tbl, err := NewTable()
		if err != nil {
			return err
		}
		for _, tc := range cnpCases {
			w := newWorld()
			tc.setup(w)
			if err := tbl.Sync(ctx, Compile(w.in, nil)); err != nil {
				return fmt.Errorf("%s: %w", tc.name, err)
			}
			stepped := sortedLines(nftList(t))
			fresh := &Table{nft: tbl.nft}
			if _, err := fresh.Remove(ctx); err != nil {
				return err
			}
			if err := fresh.Sync(ctx, Compile(w.in, func(*corev1.Pod) bool { return true })); err != nil {
				return fmt.Errorf("%s fresh: %w", tc.name, err)
			}
			if got := sortedLines(nftList(t)); got != stepped {
				t.Errorf("%s: incremental table differs from a fresh load:\n%s\n--- fresh:\n%s", tc.name, stepped, got)
			}
			tbl = fresh
		}
		return nil
	})
}
