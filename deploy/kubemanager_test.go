package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnet/kube"
)

// waitRoleInForce waits until the API server's authorizer grants the
// flannel ServiceAccount every rule of the manifest's ClusterRole: the RBAC
// authorizer reads bindings from a cache, so a just-applied role is not in
// force at once, and a check made too early would fail for no fault of the
// manifest.
func waitRoleInForce(ctx context.Context, t *testing.T, admin kubernetes.Interface, objs []object) {
	t.Helper()
	var role rbacv1.ClusterRole
	decodeStrict(t, find(t, objs, "ClusterRole", "flannel"), &role)
	user := "system:serviceaccount:" + namespace + ":flannel"
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if err := waitAllowed(ctx, admin, user, g, res, v); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}

func waitAllowed(ctx context.Context, admin kubernetes.Interface, user, group, resource, verb string) error {
	res, sub, _ := strings.Cut(resource, "/")
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{
			Group: group, Resource: res, Subresource: sub, Verb: verb,
		},
	}}
	for {
		got, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err == nil && got.Status.Allowed {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is still not allowed %q on %q after applying the manifest (review error %v): %w", user, verb, resource, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runFlanneldManager drives the real Kubernetes subnet manager, as flanneld
// runs it, with a token of the manifest's ServiceAccount: it finds its node
// through its pod (POD_NAME/POD_NAMESPACE, the one path that reads pods),
// waits for the node to register, acquires the node's pod CIDR and
// publishes its annotations, receives the
// first batch of leases, re-publishes a removed annotation on renewal, and
// sets NetworkUnavailable=False. Every step must succeed, which proves the
// ClusterRole grants enough for what flanneld really calls; the exact-rule
// test and the forbidden checks prove it grants no more.
func runFlanneldManager(ctx context.Context, t *testing.T, s *kubetest.Server, objs []object) {
	admin, err := s.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	const nodeName, podName = "deploy-flanneld-node", "kube-flannel-ds-flanneld"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:   nodeName,
			Containers: []corev1.Container{{Name: "kube-flannel", Image: "ghcr.io/flannelgo/flannel:v0.1.0"}},
		},
	}
	if _, err := admin.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}

	dir := t.TempDir()
	netConf := filepath.Join(dir, "net-conf.json")
	cm := find(t, objs, "ConfigMap", "kube-flannel-cfg")
	if err := os.WriteFile(netConf, configData(t, cm, "net-conf.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	token, err := s.ServiceAccountToken(ctx, namespace, "flannel", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := s.WriteTokenKubeconfig(kubeconfig, token); err != nil {
		t.Fatal(err)
	}

	m, err := kube.New(kube.Options{
		Kubeconfig: kubeconfig, NetConfPath: netConf,
		PodName: podName, PodNamespace: namespace,
		SetNodeNetworkUnavailable: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	attrs := &lease.Attrs{
		PublicIP: netip.MustParseAddr("198.51.100.2"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}`),
	}
	l := acquireBeforeNodeRegisters(ctx, t, admin, m, attrs, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.2.0/24", PodCIDRs: []string{"10.244.2.0/24"}},
	})
	if l.Subnet != netip.MustParsePrefix("10.244.2.0/24") {
		t.Fatalf("lease subnet %s, want the node's pod CIDR 10.244.2.0/24", l.Subnet)
	}

	first := firstLeaseBatch(ctx, t, m)
	if !hasLease(first, l.Key(), attrs.PublicIP) {
		t.Errorf("first WatchLeases batch %v lacks this node's lease %s", first, l.Key())
	}

	strip := []byte(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":null}}}`)
	if _, err := admin.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, strip, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.RenewLease(ctx, l); err != nil {
		t.Fatalf("RenewLease as the flannel ServiceAccount: %v", err)
	}
	if err := m.MarkReady(ctx); err != nil {
		t.Fatalf("MarkReady as the flannel ServiceAccount: %v", err)
	}

	got, err := admin.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/public-ip":           "198.51.100.2",
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
	} {
		if got.Annotations[k] != v {
			t.Errorf("node annotation %s = %q, want %q", k, got.Annotations[k], v)
		}
	}
	var cond *corev1.NodeCondition
	for i := range got.Status.Conditions {
		if got.Status.Conditions[i].Type == corev1.NodeNetworkUnavailable {
			cond = &got.Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != "FlannelIsUp" {
		t.Errorf("NetworkUnavailable condition after MarkReady: %+v", got.Status.Conditions)
	}
}

// acquireBeforeNodeRegisters starts AcquireLease before node exists, as
// when flanneld starts ahead of the kubelet's registration, then creates
// it. The manager then takes its longest path, get, list and a
// field-selected watch of nodes before its patch of nodes/status, so a
// role lacking any of them fails here rather than in a cluster.
func acquireBeforeNodeRegisters(ctx context.Context, t *testing.T, admin kubernetes.Interface, m *kube.Manager, attrs *lease.Attrs, node *corev1.Node) *lease.Lease {
	t.Helper()
	type result struct {
		l   *lease.Lease
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := m.AcquireLease(ctx, attrs)
		res <- result{l, err}
	}()
	// Time for the manager to reach its watch; had it not, it finds the
	// node with a plain get, which proves less but still passes.
	select {
	case r := <-res:
		t.Fatalf("AcquireLease as the flannel ServiceAccount returned before node %s existed: %v, %v", node.Name, r.l, r.err)
	case <-time.After(2 * time.Second):
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatalf("AcquireLease as the flannel ServiceAccount: %v", r.err)
		}
		return r.l
	case <-time.After(30 * time.Second):
		t.Fatalf("AcquireLease as the flannel ServiceAccount did not notice node %s registering within 30s", node.Name)
	}
	return nil
}

// firstLeaseBatch runs WatchLeases until its first batch arrives, then
// stops it and checks it ended only because it was told to.
func firstLeaseBatch(ctx context.Context, t *testing.T, m *kube.Manager) []lease.Event {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan []lease.Event)
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(wctx, events) }()
	var batch []lease.Event
	select {
	case batch = <-events:
	case err := <-done:
		t.Fatalf("WatchLeases as the flannel ServiceAccount ended before its first batch: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("WatchLeases as the flannel ServiceAccount sent no batch within a minute (is list/watch on nodes refused? see the log)")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLeases = %v, want context.Canceled", err)
	}
	return batch
}

func hasLease(batch []lease.Event, key string, ip netip.Addr) bool {
	for _, ev := range batch {
		if ev.Type == lease.Added && ev.Lease.Key() == key && ev.Lease.Attrs.PublicIP == ip {
			return true
		}
	}
	return false
}
