package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	cnpv1 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/kubeapi"
	"github.com/flannelgo/flannel/internal/netpol"
)

// The chart's copy of the CRD, which kube-flannel.yml tells operators to
// apply.
const cnpCRDPath = "../../deploy/chart/flannel/files/clusternetworkpolicies.yaml"

type (
	cnpSpec = cnpv1.ClusterNetworkPolicySpec
	cnpIn   = cnpv1.ClusterNetworkPolicyIngressRule
	cnpEg   = cnpv1.ClusterNetworkPolicyEgressRule
)

func cnpFromNS(action cnpv1.ClusterNetworkPolicyRuleAction, ns string) cnpIn {
	return cnpIn{Action: action, From: []cnpv1.ClusterNetworkPolicyIngressPeer{{Namespaces: lsel("ns", ns)}}}
}

func cnpSubject(ns string) cnpv1.ClusterNetworkPolicySubject {
	return cnpv1.ClusterNetworkPolicySubject{Namespaces: lsel("ns", ns)}
}

// flanneld --network-policy on three nodes, started before the
// ClusterNetworkPolicy CRD exists: it says the feature is off, picks the
// CRD up once installed, enforces the tiers on the whole matrix (as the
// model flannelctl explains from says too), and a changed policy flips
// traffic within a second.
func TestClusterNetworkPolicy(t *testing.T) {
	l := newNPCluster(t)
	ctx := testCtx(t, 10*time.Minute)
	waitLogs(t, l.Nodes, 30*time.Second, "no ClusterNetworkPolicy CRD")
	cfg := l.api.AdminConfig()
	installCNPCRD(ctx, t, cfg)
	api, err := kubeapi.ClusterPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cnpCluster{npCluster: l, cnp: api.REST}
	// The CRD is looked for every 10 s.
	waitLogs(t, l.Nodes, 30*time.Second, "following clusternetworkpolicies")
	for _, n := range l.Nodes {
		if got := len(logLines(n, "no ClusterNetworkPolicy CRD")); got != 1 {
			t.Errorf("%s said %d times that the CRD is missing, want once", n.Name, got)
		}
	}
	for _, tc := range cnpE2ECases() {
		if !t.Run(tc.name, func(t *testing.T) {
			c := c.with(t)
			defer c.resetCNP(ctx)
			c.change(ctx, func() { tc.apply(ctx, c) })
			c.check(ctx, tc.want)
			c.checkClusterModel(ctx, tc.want)
		}) {
			return
		}
	}
	t.Run("a changed policy flips traffic within 1s", func(t *testing.T) { testCNPFlip(ctx, c.with(t)) })
}

type cnpCluster struct {
	*npCluster
	cnp rest.Interface
}

func (c *cnpCluster) with(t *testing.T) *cnpCluster {
	return &cnpCluster{npCluster: c.npCluster.with(t), cnp: c.cnp}
}

type cnpE2ECase struct {
	name  string
	apply func(ctx context.Context, c *cnpCluster)
	want  expectFn
}

func cnpE2ECases() []cnpE2ECase {
	return []cnpE2ECase{
		{"admin deny beats a NetworkPolicy allow", func(ctx context.Context, c *cnpCluster) {
			c.createCNP(ctx, "deny-y-to-x", cnpSpec{Tier: cnpv1.AdminTier, Priority: 10, Subject: cnpSubject("x"),
				Ingress: []cnpIn{cnpFromNS("Deny", "y")}})
			c.createPolicy(ctx, "x", "allow-all", npSpec{PodSelector: *lsel(), Ingress: []npIn{{}}})
		}, func(from, to *npPod, _ int, _ string) bool { return !(from.is("y/*") && to.is("x/*")) }},
		{"pass leaves it to NetworkPolicy", func(ctx context.Context, c *cnpCluster) {
			c.createCNP(ctx, "pass-y", cnpSpec{Tier: cnpv1.AdminTier, Priority: 5, Subject: cnpSubject("x"),
				Ingress: []cnpIn{cnpFromNS("Pass", "y")}})
			c.createCNP(ctx, "deny-y-z", cnpSpec{Tier: cnpv1.AdminTier, Priority: 10, Subject: cnpSubject("x"),
				Ingress: []cnpIn{cnpFromNS("Deny", "y"), cnpFromNS("Deny", "z")}})
			c.createPolicy(ctx, "x", "only-y-b", npSpec{PodSelector: *lsel(), Ingress: []npIn{{From: []npPeer{
				{NamespaceSelector: lsel("ns", "y"), PodSelector: lsel("pod", "b")}}}}})
		}, func(from, to *npPod, _ int, _ string) bool { return !to.is("x/*") || from.is("y/b") }},
		{"baseline deny, overridden by a NetworkPolicy allow", func(ctx context.Context, c *cnpCluster) {
			c.createCNP(ctx, "baseline-deny", cnpSpec{Tier: cnpv1.BaselineTier, Priority: 1,
				Subject: cnpv1.ClusterNetworkPolicySubject{Namespaces: lsel()},
				Ingress: []cnpIn{cnpFromNS("Deny", "z")}})
			c.createPolicy(ctx, "x", "allow-z", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{
				{NamespaceSelector: lsel("ns", "z")}}}}})
		}, func(from, to *npPod, _ int, _ string) bool {
			if to.is("x/a") {
				return from.is("z/*")
			}
			return !from.is("z/*")
		}},
		{"egress to networks, on a port per protocol", func(ctx context.Context, c *cnpCluster) {
			z := []cnpv1.CIDR{}
			for _, p := range c.pods {
				if p.is("z/*") {
					z = append(z, cnpv1.CIDR(p.tbPod.IP.String()+"/32"))
				}
			}
			c.createCNP(ctx, "x-not-to-z-81", cnpSpec{Tier: cnpv1.AdminTier, Priority: 3, Subject: cnpSubject("x"),
				Egress: []cnpEg{{Action: "Deny", To: []cnpv1.ClusterNetworkPolicyEgressPeer{{Networks: z}},
					Protocols: []cnpv1.ClusterNetworkPolicyProtocol{
						{TCP: &cnpv1.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1.Port{Number: 81}}},
						{UDP: &cnpv1.ClusterNetworkPolicyProtocolUDP{DestinationPort: &cnpv1.Port{Number: 80}}}}}}})
		}, func(from, to *npPod, port int, proto string) bool {
			return !(from.is("x/*") && to.is("z/*") && (proto == "udp" && port == 80 || proto == "tcp" && port == 81))
		}},
	}
}

func installCNPCRD(ctx context.Context, t *testing.T, cfg *rest.Config) {
	t.Helper()
	data, err := os.ReadFile(cnpCRDPath)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		t.Fatalf("%s: %v", cnpCRDPath, err)
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	crds := dc.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if _, err := crds.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the ClusterNetworkPolicy CRD: %v", err)
	}
}

func (c *cnpCluster) createCNP(ctx context.Context, name string, spec cnpSpec) {
	c.t.Helper()
	pol := &cnpv1.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if err := c.cnp.Post().Resource("clusternetworkpolicies").Body(pol).Do(ctx).Error(); err != nil {
		c.t.Fatalf("create clusternetworkpolicy %s: %v", name, err)
	}
}

func (c *cnpCluster) updateCNP(ctx context.Context, name string, edit func(*cnpSpec)) {
	c.t.Helper()
	pol := &cnpv1.ClusterNetworkPolicy{}
	err := c.cnp.Get().Resource("clusternetworkpolicies").Name(name).Do(ctx).Into(pol)
	if err == nil {
		edit(&pol.Spec)
		err = c.cnp.Put().Resource("clusternetworkpolicies").Name(name).Body(pol).Do(ctx).Error()
	}
	if err != nil {
		c.t.Fatalf("update clusternetworkpolicy %s: %v", name, err)
	}
}

// resetCNP deletes every ClusterNetworkPolicy, then what reset deletes,
// and waits for the nodes to sync.
func (c *cnpCluster) resetCNP(ctx context.Context) {
	c.t.Helper()
	c.change(ctx, func() {
		if err := c.cnp.Delete().Resource("clusternetworkpolicies").Do(ctx).Error(); err != nil {
			c.t.Fatalf("delete clusternetworkpolicies: %v", err)
		}
		c.reset(ctx)
	})
}

// checkClusterModel: the model flannelctl policy explain decides from,
// ClusterNetworkPolicies included, gives the table the traffic gave.
func (c *cnpCluster) checkClusterModel(ctx context.Context, want expectFn) {
	c.t.Helper()
	m := netpol.Compile(c.input(ctx), nil)
	var wrong []string
	for _, from := range c.pods {
		for _, to := range c.pods {
			for _, port := range npPorts {
				for _, proto := range npProtos {
					d := m.Decide(from.tbPod.IP, to.tbPod.IP, netpol.Proto(strings.ToUpper(proto)), uint16(port))
					if from != to && d.Allowed() != want(from, to, port, proto) {
						wrong = append(wrong, fmt.Sprintf("%s: model says allowed=%v", npProbe{from, to, port, proto}, d.Allowed()))
					}
				}
			}
		}
	}
	if len(wrong) > 0 {
		c.t.Errorf("the explain model disagrees with the truth table in %d places:\n  %s", len(wrong), strings.Join(wrong, "\n  "))
	}
}

// testCNPFlip turns one Admin rule from Accept to Deny and back and
// measures when the traffic it governs follows; the explanation names the
// tier, the policy and the rule that decided.
func testCNPFlip(ctx context.Context, c *cnpCluster) {
	from, to := c.pod("y/b"), c.pod("x/a")
	c.change(ctx, func() {
		c.createCNP(ctx, "flip", cnpSpec{Tier: cnpv1.AdminTier, Priority: 1, Subject: cnpSubject("x"),
			Ingress: []cnpIn{cnpFromNS("Accept", "y")}})
		c.createPolicy(ctx, "x", "deny-all", npSpec{PodSelector: *lsel(), PolicyTypes: npIngress})
	})
	defer c.resetCNP(ctx)
	setAction := func(a cnpv1.ClusterNetworkPolicyRuleAction) func() {
		return func() { c.updateCNP(ctx, "flip", func(s *cnpSpec) { s.Ingress[0].Action = a }) }
	}
	var ds []time.Duration
	for range 10 {
		ds = append(ds, c.flip(ctx, from, to, false, setAction("Deny")))
		ds = append(ds, c.flip(ctx, from, to, true, setAction("Accept")))
	}
	p50, p99 := percentiles(ds)
	c.t.Logf("ClusterNetworkPolicy Accept<->Deny: %s -> %s changed %d times, in effect after p50 %s, p99 %s (max %s)",
		from, to, len(ds), p50, p99, slices.Max(ds).Round(time.Millisecond))
	if p99 > time.Second {
		c.t.Errorf("p99 %s: a ClusterNetworkPolicy change must be in effect within 1s", p99)
	}
	ctl := filepath.Join(bins.dir, "flannelctl")
	if err := goBuild(ctl, "./cmd/flannelctl"); err != nil {
		c.t.Fatal(err)
	}
	out, err := testbed.Exec(ctx, c.Nodes[0].NS, ctl, "policy", "explain", "--from", from.String(), "--to", to.String()+":80/TCP",
		"--kubeconfig", c.api.AdminKubeconfig)
	if err != nil {
		c.t.Fatalf("flannelctl policy explain: %v\n%s", err, out)
	}
	if want := "allowed by Admin tier ClusterNetworkPolicy flip (priority 1) spec.ingress[0]: Accept"; !strings.Contains(string(out), want) {
		c.t.Errorf("flannelctl policy explain lacks %q:\n%s", want, out)
	}
}

// input is the cluster state as flannelctl policy explain reads it.
func (c *cnpCluster) input(ctx context.Context) netpol.Input {
	c.t.Helper()
	in, err := netpol.ListInput(ctx, c.cs.CoreV1().RESTClient(), c.cs.NetworkingV1().RESTClient())
	if err == nil {
		err = netpol.ListClusterInput(ctx, c.api.AdminConfig(), &in)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return in
}
