package deploy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// standInUpstreamChart writes a chart shaped as upstream's chart installs
// flannel: the objects of kube-flannel.yml less the Namespace, placed in
// the release's namespace (no metadata.namespace), under upstream's chart
// name and version, with an image of its own and values with every key of
// upstream's chart. What Helm checks on upgrade (which objects the release
// owns, in which namespace) and what it passes on (the values) is all it
// needs.
// scripts/chart-compare.sh runs the same test with upstream's real chart.
func standInUpstreamChart(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var docs []string
	for _, o := range loadManifest(t) {
		if o.kind() == "Namespace" {
			continue
		}
		delete(o.body["metadata"].(map[string]any), "namespace")
		u := unstructured.Unstructured{Object: o.body}
		b, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, strings.ReplaceAll(string(b), "ghcr.io/flannelgo/flannel:", "registry.example/upstream-flannel:"))
	}
	writeFile(t, filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v1\nname: flannel\nversion: v0.28.9\nappVersion: v0.28.9\n"))
	// Its values are every key of upstream's chart: what `helm upgrade
	// --reuse-values` hands to the next chart.
	writeFile(t, filepath.Join(dir, "values.yaml"), everyUpstreamKeyValues(t))
	if err := os.Mkdir(filepath.Join(dir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "templates", "objects.yaml"), []byte(strings.Join(docs, "\n---\n")+"\n"))
	return dir
}

// TestHelmUpgradeFromAnUpstreamRelease installs flannel as upstream's
// README does (namespace created and labelled by hand, release installed
// into it) and upgrades the release to this chart: Helm must accept every
// object as the release's own, the DaemonSet must be updated in place, and
// the hand-made namespace stays as it was. `helm upgrade --reuse-values`
// from the upstream release works too, and a last upgrade turns network
// policy on.
func TestHelmUpgradeFromAnUpstreamRelease(t *testing.T) {
	bin := helmBinary(t)
	s := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin, err := s.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	upstream := os.Getenv("FLANNEL_UPSTREAM_CHART")
	if upstream == "" {
		upstream = standInUpstreamChart(t)
	}
	t.Logf("installing the upstream release from %s", upstream)
	kc := []string{"-n", namespace, "--kubeconfig", s.AdminKubeconfig}
	if out, err := helm(t, bin, append([]string{"install", "flannel", upstream, "--set", "podCidr=10.244.0.0/16"}, kc...)...); err != nil {
		t.Fatalf("install the upstream release: %v\n%s", err, out)
	}
	dyn, err := dynamic.NewForConfig(s.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	dsRes := dyn.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}).Namespace(namespace)
	before, err := dsRes.Get(ctx, "kube-flannel-ds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// --reuse-values renders this chart with upstream's values as its
	// defaults, none of this chart's own keys among them: it must work,
	// though it keeps upstream's images; then back to the upstream release.
	if out, err := helm(t, bin, append([]string{"upgrade", "flannel", chartDir, "--reuse-values"}, kc...)...); err != nil {
		t.Fatalf("helm upgrade --reuse-values from the upstream release: %v\n%s", err, out)
	}
	if out, err := helm(t, bin, append([]string{"rollback", "flannel", "1"}, kc...)...); err != nil {
		t.Fatalf("helm rollback to the upstream release: %v\n%s", err, out)
	}

	// As deploy/README.md says to upgrade: the release's values are
	// reused, this chart's defaults apply to the rest.
	if out, err := helm(t, bin, append([]string{"upgrade", "flannel", chartDir}, kc...)...); err != nil {
		t.Fatalf("helm upgrade from the upstream release: %v\n%s", err, out)
	}
	after, err := dsRes.Get(ctx, "kube-flannel-ds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetUID() != before.GetUID() {
		t.Errorf("the DaemonSet was replaced, not updated in place")
	}
	containers, _, _ := unstructured.NestedSlice(after.Object, "spec", "template", "spec", "containers")
	if img := containers[0].(map[string]any)["image"]; !strings.HasPrefix(img.(string), "ghcr.io/flannelgo/flannel:") {
		t.Errorf("after the upgrade the DaemonSet runs %v, want this chart's image", img)
	}
	got, err := admin.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["pod-security.kubernetes.io/enforce"] != "privileged" || got.Annotations["meta.helm.sh/release-name"] != "" {
		t.Errorf("the hand-made namespace changed: labels %v annotations %v", got.Labels, got.Annotations)
	}

	if out, err := helm(t, bin, append([]string{"upgrade", "flannel", chartDir, "--reuse-values", "--set", "netpol.enabled=true"}, kc...)...); err != nil {
		t.Fatalf("helm upgrade with netpol.enabled: %v\n%s", err, out)
	}
	role, err := admin.RbacV1().ClusterRoles().Get(ctx, "flannel", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(role.String(), "networkpolicies") {
		t.Errorf("netpol.enabled did not grant networkpolicies: %v", role.Rules)
	}
	out, err := helm(t, bin, append([]string{"history", "flannel"}, kc...)...)
	if err != nil || strings.Count(string(out), "deployed") != 1 || strings.Count(string(out), "superseded") != 4 {
		t.Errorf("helm history: want revisions 1 to 4 superseded, 5 deployed; got %v\n%s", err, out)
	}
}
