package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

const fieldManager = "flannel-deploy-test"

// startAPIServer runs a real etcd + kube-apiserver for the test; without
// the binaries it fails in CI and skips elsewhere.
func startAPIServer(t *testing.T) *kubetest.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := kubetest.Start(ctx, kubetest.Options{})
	if errors.Is(err, kubetest.ErrUnavailable) {
		tbtest.Unavailable(t, "no kube-apiserver to test against: %v", err)
	}
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop kube-apiserver: %v", err)
		}
	})
	return s
}

// applier applies decoded objects with server-side apply through the
// dynamic client, finding each kind's resource through discovery.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(cfg *rest.Config) (*applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		return nil, fmt.Errorf("discover API resources: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDiscoveryRESTMapper(groups)}, nil
}

// apply server-side-applies o, for real or as a dry run, with strict field
// validation so an unknown or misspelt field is an error, not a warning.
func (a *applier) apply(ctx context.Context, o object, dryRun bool) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{Object: o.body}
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s: no API resource for %s: %w", o.key(), gvk, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = a.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: new(true), FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	out, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, opts)
	if err != nil {
		return nil, fmt.Errorf("apply %s (dry run %v): %w", o.key(), dryRun, err)
	}
	return out, nil
}

// TestManifestAndChartOnARealAPIServer creates every object of
// kube-flannel.yml on a real kube-apiserver, proves the ServiceAccount can
// make exactly flanneld's calls and no others, runs the real Kubernetes
// subnet manager with that ServiceAccount's token, server-side dry-runs
// the rendered chart over it and checks that would change nothing, and
// last applies the ClusterRole with its --network-policy lines uncommented
// and checks the policy controller's reads are then allowed.
func TestManifestAndChartOnARealAPIServer(t *testing.T) {
	s := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := newApplier(s.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	objs := loadManifest(t)
	live := map[string]*unstructured.Unstructured{}
	for _, o := range objs { // Namespace comes first in the file
		u, err := a.apply(ctx, o, false)
		if err != nil {
			t.Fatal(err)
		}
		live[o.key()] = u
	}
	ds := live["DaemonSet/kube-flannel/kube-flannel-ds"]
	if pc, _, _ := unstructured.NestedString(ds.Object, "spec", "template", "spec", "priorityClassName"); pc != "system-node-critical" {
		t.Errorf("priorityClassName on the server = %q", pc)
	}

	admin, err := s.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	waitRoleInForce(ctx, t, admin, objs)

	t.Run("ServiceAccountPermissions", func(t *testing.T) {
		checkFlannelPermissions(ctx, t, s)
	})

	t.Run("FlanneldKubeManagerRunsWithTheManifestRBAC", func(t *testing.T) {
		runFlanneldManager(ctx, t, s, objs)
	})

	t.Run("ChartDryRunChangesNothing", func(t *testing.T) {
		bin := helmBinary(t)
		for _, o := range renderChartArgs(t, bin, chartDir, "-n", "kube-system", "-f", valuesFile("manifest")) {
			got, err := a.apply(ctx, o, true)
			if err != nil {
				t.Fatal(err)
			}
			before := live[o.key()]
			if before == nil {
				t.Errorf("chart renders %s, which the manifest does not have", o.key())
				continue
			}
			if got.GetGeneration() != before.GetGeneration() {
				t.Errorf("%s: applying the chart would bump generation %d -> %d (the spec differs)",
					o.key(), before.GetGeneration(), got.GetGeneration())
			}
			if diff := cmp.Diff(comparable(t, before), comparable(t, got)); diff != "" {
				t.Errorf("%s: chart differs from the manifest on the server (-manifest +chart):\n%s", o.key(), diff)
			}
		}
	})

	// Last: it changes the ClusterRole the subtests above check.
	t.Run("NetworkPolicyLinesGrantWhatItReads", func(t *testing.T) {
		checkNetworkPolicyPermissions(ctx, t, s, a, admin)
	})
}

// checkNetworkPolicyPermissions applies the manifest's ClusterRole with its
// --network-policy rules uncommented and checks the ServiceAccount can now
// list and watch what the policy controller follows.
func checkNetworkPolicyPermissions(ctx context.Context, t *testing.T, s *kubetest.Server, a *applier, admin kubernetes.Interface) {
	data, err := WithNetworkPolicy(readFile(t, manifestPath))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStream(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.apply(ctx, find(t, objs, "ClusterRole", "flannel"), false); err != nil {
		t.Fatal(err)
	}
	waitRoleInForce(ctx, t, admin, objs)
	sa := serviceAccountClient(ctx, t, s)
	for name, call := range networkPolicyCalls(ctx, sa) {
		if err := call(); err != nil {
			t.Errorf("with the --network-policy rules, the flannel ServiceAccount cannot %s: %v", name, err)
		}
	}
}

// networkPolicyCalls are the reads flanneld --network-policy makes: it
// lists and watches pods, namespaces and NetworkPolicies cluster-wide.
func networkPolicyCalls(ctx context.Context, sa kubernetes.Interface) map[string]func() error {
	watch := func(w interface{ Stop() }, err error) error {
		if err == nil {
			w.Stop()
		}
		return err
	}
	return map[string]func() error{
		"list pods (--network-policy)": func() error {
			_, err := sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			return err
		},
		"watch pods (--network-policy)": func() error {
			return watch(sa.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{}))
		},
		"list namespaces (--network-policy)": func() error {
			_, err := sa.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			return err
		},
		"watch namespaces (--network-policy)": func() error {
			return watch(sa.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{}))
		},
		"list networkpolicies (--network-policy)": func() error {
			_, err := sa.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
			return err
		},
		"watch networkpolicies (--network-policy)": func() error {
			return watch(sa.NetworkingV1().NetworkPolicies("").Watch(ctx, metav1.ListOptions{}))
		},
	}
}

// serviceAccountClient acts as the manifest's ServiceAccount, with a token
// the API server mints for it.
func serviceAccountClient(ctx context.Context, t *testing.T, s *kubetest.Server) kubernetes.Interface {
	t.Helper()
	token, err := s.ServiceAccountToken(ctx, namespace, "flannel", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(&rest.Config{
		Host: s.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: s.CAFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// comparable strips server bookkeeping and normalises embedded JSON.
func comparable(t *testing.T, u *unstructured.Unstructured) map[string]any {
	t.Helper()
	c := u.DeepCopy()
	for _, f := range []string{"managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	n, err := normalise(object{body: c.Object})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// annotationPatch is a merge patch of two of flanneld's node annotations.
const annotationPatch = `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-type":"vxlan","flannel.alpha.coreos.com/kube-subnet-manager":"true"}}}`

// checkFlannelPermissions acts as the manifest's ServiceAccount, with a
// token the API server mints for it, and makes flanneld's calls in kube
// mode, then calls it must not be able to make.
func checkFlannelPermissions(ctx context.Context, t *testing.T, s *kubetest.Server) {
	admin, err := s.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "deploy-test-node"},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}},
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel-ds-test", Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:   node.Name,
			Containers: []corev1.Container{{Name: "kube-flannel", Image: "ghcr.io/flannelgo/flannel:v0.1.0"}},
		},
	}
	if _, err := admin.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}

	sa := serviceAccountClient(ctx, t, s)

	allowed := map[string]func() error{
		"get own pod": func() error {
			_, err := sa.CoreV1().Pods(namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			return err
		},
		"get node": func() error {
			_, err := sa.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
			return err
		},
		"list nodes": func() error {
			_, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		},
		"watch nodes": func() error {
			w, err := sa.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		},
		// As flanneld writes them: a merge patch of the status
		// subresource, which keeps metadata changes.
		"patch node annotations through nodes/status": func() error {
			_, err := sa.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(annotationPatch), metav1.PatchOptions{}, "status")
			return err
		},
		"patch node NetworkUnavailable condition": func() error {
			now := metav1.Now().UTC().Format(time.RFC3339)
			p := fmt.Sprintf(`{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":"FlannelIsUp","message":"Flannel is running on this node","lastTransitionTime":%q,"lastHeartbeatTime":%q}]}}`, now, now)
			_, err := sa.CoreV1().Nodes().Patch(ctx, node.Name, types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{}, "status")
			return err
		},
	}
	for name, call := range allowed {
		if err := call(); err != nil {
			t.Errorf("flannel ServiceAccount cannot %s: %v", name, err)
		}
	}

	forbidden := map[string]func() error{
		// The main resource would also open the spec (taints,
		// unschedulable); a dry run, so a wrongly granted patch changes
		// nothing the checks below look at.
		"patch node (not its status)": func() error {
			_, err := sa.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(annotationPatch), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		},
		"update node status": func() error {
			n, err := admin.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = sa.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		},
		"create node": func() error {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "deploy-test-intruder"}}
			_, err := sa.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		},
		"update node": func() error {
			n, err := admin.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = sa.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
			return err
		},
		"delete node": func() error {
			return sa.CoreV1().Nodes().Delete(ctx, node.Name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		},
		"delete pod": func() error {
			return sa.CoreV1().Pods(namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		},
		"read secrets": func() error {
			_, err := sa.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
			return err
		},
		"change its ConfigMap": func() error {
			p := `{"data":{"net-conf.json":"{}"}}`
			_, err := sa.CoreV1().ConfigMaps(namespace).Patch(ctx, "kube-flannel-cfg", types.MergePatchType, []byte(p), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		},
	}
	// Without --network-policy nothing reads pods, namespaces or
	// policies in bulk, so the plain manifest does not grant it.
	maps.Copy(forbidden, networkPolicyCalls(ctx, sa))
	for name, call := range forbidden {
		if err := call(); !apierrors.IsForbidden(err) {
			t.Errorf("flannel ServiceAccount should be forbidden to %s; got %v", name, err)
		}
	}

	got, err := admin.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Annotations["flannel.alpha.coreos.com/backend-type"] != "vxlan" {
		t.Errorf("node annotations after the ServiceAccount's patch: %v", got.Annotations)
	}
	var cond *corev1.NodeCondition
	for i := range got.Status.Conditions {
		if got.Status.Conditions[i].Type == corev1.NodeNetworkUnavailable {
			cond = &got.Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != corev1.ConditionFalse {
		t.Errorf("NetworkUnavailable condition after the ServiceAccount's patch: %+v", got.Status.Conditions)
	}
}
