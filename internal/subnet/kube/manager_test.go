package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/harness/leasewatch"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
)

// One API server serves every test of the package: starting one takes
// tens of seconds on a busy machine. Tests use distinct node names.
type sharedServer struct {
	once sync.Once
	srv  *kubetest.Server
	err  error
}

var shared sharedServer

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop kube-apiserver: %v\n", err)
		}
	}
	os.Exit(code)
}

type env struct {
	srv *kubetest.Server
	cs  kubernetes.Interface
}

// newEnv returns the shared API server, or skips the test when the
// kube-apiserver binary is not built.
func newEnv(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a kube-apiserver; skipped in -short mode")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		shared.srv, shared.err = kubetest.Start(ctx, kubetest.Options{})
		if shared.err == nil {
			fmt.Fprintf(os.Stderr, "kube-apiserver ready at %s after %s\n", shared.srv.URL, time.Since(start).Round(time.Millisecond))
		}
	})
	if errors.Is(shared.err, kubetest.ErrUnavailable) {
		tbtest.Unavailable(t, "%v", shared.err)
	}
	if shared.err != nil {
		t.Fatalf("start kube-apiserver: %v", shared.err)
	}
	cs, err := shared.srv.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: shared.srv, cs: cs}
}

func writeNetConf(t *testing.T, js string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(path, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *env) manager(t *testing.T, opts Options) *Manager {
	t.Helper()
	if opts.RestConfig == nil && opts.Kubeconfig == "" {
		opts.RestConfig = e.srv.AdminConfig()
	}
	if opts.NetConfPath == "" {
		opts.NetConfPath = writeNetConf(t, v4Conf)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *env) createNode(t *testing.T, n *corev1.Node) {
	t.Helper()
	if _, err := e.cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", n.Name, err)
	}
	t.Cleanup(func() { e.deleteNode(t, n.Name) })
}

func (e *env) deleteNode(t *testing.T, name string) {
	err := e.cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete node %s: %v", name, err)
	}
}

func (e *env) getNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := e.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func vxlanAttrs(ip string) *lease.Attrs {
	return &lease.Attrs{
		PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}`),
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestAcquirePublishesAnnotations(t *testing.T) {
	e := newEnv(t)
	e.createNode(t, node("acq-1", nil, "10.244.1.0/24"))
	m := e.manager(t, Options{NodeName: "acq-1"})
	l, err := m.AcquireLease(ctxT(t, time.Minute), vxlanAttrs("198.51.100.2"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.1.0/24") || l.IPv6Subnet.IsValid() || time.Until(l.Expiration) < time.Hour {
		t.Fatalf("lease %+v", l)
	}
	n := e.getNode(t, "acq-1")
	for k, v := range map[string]string{
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}`,
		"flannel.alpha.coreos.com/public-ip":           "198.51.100.2",
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
	} {
		if n.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, n.Annotations[k], v)
		}
	}
	if _, ok := n.Annotations["flannel.alpha.coreos.com/public-ipv6"]; ok {
		t.Error("public-ipv6 published on an IPv4 node")
	}
	// A second acquisition with the same attributes writes nothing.
	rv := n.ResourceVersion
	if _, err := m.AcquireLease(ctxT(t, time.Minute), vxlanAttrs("198.51.100.2")); err != nil {
		t.Fatal(err)
	}
	if got := e.getNode(t, "acq-1").ResourceVersion; got != rv {
		t.Errorf("idempotent acquire changed the node (rv %s -> %s)", rv, got)
	}
	// Someone strips the annotations: RenewLease puts them back.
	patch := []byte(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":null}}}`)
	if _, err := e.cs.CoreV1().Nodes().Patch(context.Background(), "acq-1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.RenewLease(ctxT(t, time.Minute), l); err != nil {
		t.Fatal(err)
	}
	if got := e.getNode(t, "acq-1").Annotations["flannel.alpha.coreos.com/public-ip"]; got != "198.51.100.2" {
		t.Errorf("after renew public-ip = %q", got)
	}
}

func TestAcquireDualStackAndOverwrite(t *testing.T) {
	e := newEnv(t)
	e.createNode(t, node("acq-dual", map[string]string{
		"flannel.alpha.coreos.com/public-ip-overwrite": "203.0.113.7",
		"flannel.alpha.coreos.com/public-ipv6":         "fd00:198:51:100::99", // stale, replaced
	}, "10.244.2.0/24", "fd00:10:244:2::/64"))
	m := e.manager(t, Options{NodeName: "acq-dual", NetConfPath: writeNetConf(t, dualConf)})
	attrs := vxlanAttrs("198.51.100.3")
	attrs.PublicIPv6 = netip.MustParseAddr("fd00:198:51:100::3")
	attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"ae:12:34:56:78:9b"}`)
	l, err := m.AcquireLease(ctxT(t, time.Minute), attrs)
	if err != nil {
		t.Fatal(err)
	}
	if l.Key() != "10.244.2.0-24&fd00:10:244:2::-64" || l.Attrs.PublicIP != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("lease %s attrs %+v", l.Key(), l.Attrs)
	}
	ann := e.getNode(t, "acq-dual").Annotations
	if ann["flannel.alpha.coreos.com/public-ip"] != "203.0.113.7" || ann["flannel.alpha.coreos.com/public-ipv6"] != "fd00:198:51:100::3" ||
		ann["flannel.alpha.coreos.com/backend-v6-data"] != `{"VNI":1,"VtepMAC":"ae:12:34:56:78:9b"}` {
		t.Fatalf("annotations %v", ann)
	}
}

func TestWatchLeases(t *testing.T) {
	e := newEnv(t)
	e.createNode(t, node("w-own", nil, "10.244.10.0/24"))
	e.createNode(t, node("w-peer", flannelAnn("198.51.100.11"), "10.244.11.0/24"))
	// A node as the kubelet first registers it: no annotations, labels,
	// addresses or pod CIDR. It must be skipped, not trip the watcher.
	e.createNode(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w-bare"}})
	m := e.manager(t, Options{NodeName: "w-own"})
	if _, err := m.AcquireLease(ctxT(t, time.Minute), vxlanAttrs("198.51.100.10")); err != nil {
		t.Fatal(err)
	}
	c := leasewatch.Start(t, m)

	// First batch: the full snapshot, own node included.
	c.WaitFor(t, "first batch", 60*time.Second, func(b [][]lease.Event) bool { return len(b) > 0 })
	first := c.Batches()[0]
	keys := map[string]lease.Event{}
	for _, ev := range first {
		if ev.Type != lease.Added {
			t.Errorf("first batch has %v", ev)
		}
		keys[ev.Lease.Key()] = ev
	}
	own, peer := keys["10.244.10.0-24"], keys["10.244.11.0-24"]
	if own.Lease.Attrs.PublicIP != netip.MustParseAddr("198.51.100.10") || peer.Lease.Attrs.PublicIP != netip.MustParseAddr("198.51.100.11") ||
		string(peer.Lease.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}` {
		t.Fatalf("first batch %v", first)
	}

	t0 := time.Now()
	e.deleteNode(t, "w-peer")
	c.WaitFor(t, "w-peer removed", 5*time.Second, func(b [][]lease.Event) bool { return leasewatch.HasEvent(b, lease.Removed, "10.244.11.0-24") })
	t.Logf("deleted node seen as Removed %s after the delete call", time.Since(t0).Round(time.Microsecond))

	t0 = time.Now()
	e.createNode(t, node("w-late", flannelAnn("198.51.100.12"), "10.244.12.0/24"))
	c.WaitFor(t, "w-late added", 5*time.Second, func(b [][]lease.Event) bool { return leasewatch.HasEvent(b, lease.Added, "10.244.12.0-24") })
	t.Logf("new node seen as Added %s after the create call", time.Since(t0).Round(time.Microsecond))

	// The bare node gets a pod CIDR and, later, its flanneld's annotations.
	bare := e.getNode(t, "w-bare")
	bare.Spec.PodCIDR, bare.Spec.PodCIDRs = "10.244.13.0/24", []string{"10.244.13.0/24"}
	if _, err := e.cs.CoreV1().Nodes().Update(context.Background(), bare, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ann, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": flannelAnn("198.51.100.13")}})
	if _, err := e.cs.CoreV1().Nodes().Patch(context.Background(), "w-bare", types.MergePatchType, ann, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, "w-bare added", 5*time.Second, func(b [][]lease.Event) bool { return leasewatch.HasEvent(b, lease.Added, "10.244.13.0-24") })

	// Its annotations removed (flannel uninstalled there): Removed.
	strip := []byte(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/kube-subnet-manager":null}}}`)
	if _, err := e.cs.CoreV1().Nodes().Patch(context.Background(), "w-bare", types.MergePatchType, strip, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, "w-bare removed", 5*time.Second, func(b [][]lease.Event) bool { return leasewatch.HasEvent(b, lease.Removed, "10.244.13.0-24") })

	// A changed public address is an Added event for the same key.
	newIP, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{"flannel.alpha.coreos.com/public-ip": "198.51.100.22"}}})
	if _, err := e.cs.CoreV1().Nodes().Patch(context.Background(), "w-late", types.MergePatchType, newIP, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, "w-late changed", 5*time.Second, func(b [][]lease.Event) bool {
		for _, ev := range b[len(b)-1] {
			if ev.Type == lease.Added && ev.Lease.Attrs.PublicIP == netip.MustParseAddr("198.51.100.22") {
				return true
			}
		}
		return false
	})
}

// logCapture routes klog into a buffer for the duration of a test.
type logCapture struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (lc *logCapture) Write(p []byte) (int, error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.buf.Write(p)
}

func captureKlog(t *testing.T) *logCapture {
	lc := &logCapture{}
	klog.LogToStderr(false)
	// Every message reaches the INFO output; the others would repeat it.
	klog.SetOutput(io.Discard)
	klog.SetOutputBySeverity("INFO", lc)
	t.Cleanup(func() {
		klog.Flush()
		klog.LogToStderr(true)
		klog.SetOutput(os.Stderr)
		t.Logf("captured log:\n%s", lc.String())
	})
	return lc
}

// waitFor fails the test unless want shows up in the log within 30 s.
func (lc *logCapture) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(lc.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, lc.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (lc *logCapture) String() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.buf.String()
}

func TestAcquireWaitsForPodCIDR(t *testing.T) {
	e := newEnv(t)
	logs := captureKlog(t)
	e.createNode(t, node("wait-1", nil))
	m := e.manager(t, Options{NodeName: "wait-1"})
	type result struct {
		l   *lease.Lease
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := m.AcquireLease(ctxT(t, 2*time.Minute), vxlanAttrs("198.51.100.30"))
		res <- result{l, err}
	}()
	logs.waitFor(t, `node "wait-1" pod cidr not assigned`)
	if !strings.Contains(logs.String(), "--allocate-node-cidrs") || !strings.Contains(logs.String(), "--pod-network-cidr") {
		t.Errorf("message lacks the hint:\n%s", logs.String())
	}
	select {
	case r := <-res:
		t.Fatalf("acquire returned before the pod CIDR was set: %+v %v", r.l, r.err)
	case <-time.After(500 * time.Millisecond):
	}
	patch := []byte(`{"spec":{"podCIDR":"10.244.30.0/24","podCIDRs":["10.244.30.0/24"]}}`)
	if _, err := e.cs.CoreV1().Nodes().Patch(context.Background(), "wait-1", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case r := <-res:
		if r.err != nil || r.l.Subnet != netip.MustParsePrefix("10.244.30.0/24") {
			t.Fatalf("acquire = %+v, %v", r.l, r.err)
		}
		t.Logf("acquire completed %s after the pod CIDR was set", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("acquire did not complete within 5s of the pod CIDR being set")
	}
}

func TestAcquireWaitsForNodeToRegister(t *testing.T) {
	e := newEnv(t)
	logs := captureKlog(t)
	m := e.manager(t, Options{NodeName: "wait-late"})
	res := make(chan error, 1)
	go func() {
		_, err := m.AcquireLease(ctxT(t, 2*time.Minute), vxlanAttrs("198.51.100.31"))
		res <- err
	}()
	// The node is created only once acquire has seen it missing.
	logs.waitFor(t, `node "wait-late" not found; waiting`)
	e.createNode(t, node("wait-late", nil, "10.244.31.0/24"))
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("acquire did not notice the node being created")
	}
}

func TestAcquireRefusesPodCIDROutsideNetwork(t *testing.T) {
	e := newEnv(t)
	e.createNode(t, node("out-1", nil, "10.99.1.0/24"))
	m := e.manager(t, Options{NodeName: "out-1"})
	_, err := m.AcquireLease(ctxT(t, time.Minute), vxlanAttrs("198.51.100.40"))
	if err == nil || !strings.Contains(err.Error(), "10.99.1.0/24") || !strings.Contains(err.Error(), "10.244.0.0/16") {
		t.Fatalf("err = %v, want one naming 10.99.1.0/24 and 10.244.0.0/16", err)
	}
	if ann := e.getNode(t, "out-1").Annotations; len(ann) != 0 {
		t.Errorf("refused node was annotated: %v", ann)
	}
}

func TestNetConfErrors(t *testing.T) {
	// No API server needed: New does not contact it.
	missing := filepath.Join(t.TempDir(), "nope.json")
	opts := Options{APIURL: "https://127.0.0.1:1", NetConfPath: missing, NodeName: "n"}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	if _, err := m.GetNetworkConfig(ctx); err == nil || !strings.HasPrefix(err.Error(), "failed to read net conf: "+missing+": ") {
		t.Fatalf("missing: %v", err)
	}
	if _, err := m.AcquireLease(ctx, vxlanAttrs("198.51.100.50")); err == nil || !strings.Contains(err.Error(), "failed to read net conf") {
		t.Fatalf("acquire with missing conf: %v", err)
	}
	opts.NetConfPath = writeNetConf(t, `{"Network": "10.244.0.0/16",`)
	if m, err = New(opts); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetNetworkConfig(ctx); err == nil || !strings.HasPrefix(err.Error(), "error parsing subnet config: ") {
		t.Fatalf("malformed: %v", err)
	}
}

func TestNodeNameFromPod(t *testing.T) {
	e := newEnv(t)
	e.createNode(t, node("pod-node", nil, "10.244.60.0/24"))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel"}}
	if _, err := e.cs.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel-ds-x", Namespace: "kube-flannel"},
		Spec:       corev1.PodSpec{NodeName: "pod-node", Containers: []corev1.Container{{Name: "kube-flannel", Image: "flannel"}}},
	}
	if _, err := e.cs.CoreV1().Pods("kube-flannel").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = e.cs.CoreV1().Pods("kube-flannel").Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	m := e.manager(t, Options{PodName: pod.Name, PodNamespace: "kube-flannel"})
	l, err := m.AcquireLease(ctxT(t, time.Minute), vxlanAttrs("198.51.100.60"))
	if err != nil || l.Subnet != netip.MustParsePrefix("10.244.60.0/24") {
		t.Fatalf("acquire = %v, %v", l, err)
	}
	if _, err := New(Options{RestConfig: e.srv.AdminConfig()}); err != nil {
		t.Fatal(err)
	}
	noName := e.manager(t, Options{})
	if _, err := noName.AcquireLease(ctxT(t, time.Minute), vxlanAttrs("198.51.100.61")); err == nil || !strings.Contains(err.Error(), "NODE_NAME") {
		t.Fatalf("no node name: %v", err)
	}
}

// flannelRules are upstream flannel's ClusterRole rules.
func flannelRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
	}
}

func TestServiceAccountPermissions(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 2*time.Minute)

	// Upstream's ClusterRole is enough for the whole cycle.
	e.createNode(t, node("rbac-ok", nil, "10.244.70.0/24"))
	kc, err := e.srv.ServiceAccountKubeconfig(ctx, "kube-flannel", "flannel", flannelRules())
	if err != nil {
		t.Fatal(err)
	}
	m := e.manager(t, Options{Kubeconfig: kc, NodeName: "rbac-ok", SetNodeNetworkUnavailable: true})
	if _, err := m.AcquireLease(ctx, vxlanAttrs("198.51.100.70")); err != nil {
		t.Fatalf("acquire with upstream's RBAC: %v", err)
	}
	c := leasewatch.Start(t, m)
	c.WaitFor(t, "first batch", 30*time.Second, func(b [][]lease.Event) bool { return leasewatch.HasEvent(b, lease.Added, "10.244.70.0-24") })
	if err := m.MarkReady(ctx); err != nil {
		t.Fatalf("MarkReady: %v", err)
	}
	var cond *corev1.NodeCondition
	for _, c := range e.getNode(t, "rbac-ok").Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			cond = &c
		}
	}
	if cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != "FlannelIsUp" {
		t.Fatalf("NetworkUnavailable condition = %+v", cond)
	}

	// Without "patch" on nodes/status the error says what is missing.
	e.createNode(t, node("rbac-1", nil, "10.244.71.0/24"))
	kc, err = e.srv.ServiceAccountKubeconfig(ctx, "kube-flannel", "flannel-nopatch", flannelRules()[:2])
	if err != nil {
		t.Fatal(err)
	}
	m = e.manager(t, Options{Kubeconfig: kc, NodeName: "rbac-1"})
	_, err = m.AcquireLease(ctx, vxlanAttrs("198.51.100.71"))
	want := `nodes "rbac-1" is forbidden: flanneld needs "patch" on "nodes/status"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to contain %q", err, want)
	}
	t.Logf("error: %v", err)

	// Without "list"/"watch" on nodes the watch cannot start; it says why
	// and keeps retrying until its context ends.
	logs := captureKlog(t)
	kc, err = e.srv.ServiceAccountKubeconfig(ctx, "kube-flannel", "flannel-nolist", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m = e.manager(t, Options{Kubeconfig: kc, NodeName: "rbac-1"})
	wctx, wcancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() { werr <- m.WatchLeases(wctx, make(chan []lease.Event)) }()
	logs.waitFor(t, `nodes is forbidden: flanneld needs "list and watch" on "nodes"`)
	wcancel()
	if err := <-werr; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchLeases = %v, want context.Canceled", err)
	}

	// Without "get" on nodes: named as well.
	kc, err = e.srv.ServiceAccountKubeconfig(ctx, "kube-flannel", "flannel-noget", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m = e.manager(t, Options{Kubeconfig: kc, NodeName: "rbac-1"})
	_, err = m.AcquireLease(ctx, vxlanAttrs("198.51.100.71"))
	if want := `nodes "rbac-1" is forbidden: flanneld needs "get" on "nodes"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to contain %q", err, want)
	}
}
