package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/flannelgo/flannel/deploy"
	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// annPrefix is flanneld's default --kube-annotation-prefix.
const annPrefix = "flannel.alpha.coreos.com/"

// kubeCluster is a testbed whose datastore is a real kube-apiserver running
// in the hub namespace, reachable from the nodes over the underlay. The
// test creates the Node objects, standing in for the kubelets and
// kube-controller-manager.
type kubeCluster struct {
	*cluster
	api *kubetest.Server
	cs  kubernetes.Interface
}

// newKubeCluster builds the namespaces and starts etcd + kube-apiserver in
// the hub. The testbed's own etcd is not started: flanneld in kube mode
// never talks to it. Everything goes away when the test ends.
func newKubeCluster(t testing.TB, name string, nodes int, opts ...func(*testbed.Options)) *kubeCluster {
	t.Helper()
	needNamespaces(t)
	ctx := testCtx(t, 3*time.Minute)
	name = taggedName(name)
	o := testbed.Options{
		Name: name, Nodes: nodes, StateDir: filepath.Join(t.TempDir(), "testbed"),
		FlanneldPath: bins.flanneld, KeepState: true,
	}
	for _, opt := range opts {
		opt(&o)
	}
	tb, err := testbed.New(ctx, o)
	if err != nil {
		t.Fatalf("build testbed: %v", err)
	}
	tb.PodNetworker = pods()
	k := &kubeCluster{cluster: &cluster{Testbed: tb, t: t}}
	// Registered first, so it runs last: the servers and flanneld are gone
	// before their namespaces are.
	t.Cleanup(func() {
		if t.Failed() {
			k.dumpLogs()
		}
		if err := tb.Close(context.Background()); err != nil {
			t.Errorf("remove testbed %s: %v", name, err)
		}
	})
	begin := time.Now()
	api, err := kubetest.Start(ctx, kubetest.Options{NetNS: tb.Hub.NS, Address: tb.Hub.Addr})
	if errors.Is(err, kubetest.ErrUnavailable) {
		tbtest.Unavailable(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("start kube-apiserver in %s: %v", tb.Hub.NS, err)
	}
	t.Logf("kube-apiserver ready at %s after %s", api.URL, time.Since(begin).Round(time.Millisecond))
	k.api = api
	t.Cleanup(func() {
		// Flanneld first: it would only log the API server's absence.
		for _, n := range tb.Nodes {
			if err := tb.StopFlanneld(n); err != nil {
				t.Errorf("%v", err)
			}
		}
		if t.Failed() {
			t.Logf("--- kube-apiserver log (last lines)\n%s", tailFile(api.APIServerLog, 20))
		}
		if err := api.Stop(); err != nil {
			t.Errorf("stop kube-apiserver: %v", err)
		}
	})
	if k.cs, err = api.AdminClient(); err != nil {
		t.Fatal(err)
	}
	return k
}

// with is k reporting to t, for use inside a subtest: a helper must fail
// the test whose goroutine calls it.
func (k *kubeCluster) with(t *testing.T) *kubeCluster {
	return &kubeCluster{cluster: &cluster{Testbed: k.Testbed, t: t}, api: k.api, cs: k.cs}
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	all := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// podCIDR is the pod CIDR the test assigns to the node with this index, as
// kube-controller-manager would from --cluster-cidr=10.244.0.0/16.
func podCIDR(index int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", index))
}

// createNode registers a Node object as a kubelet would, with cidr as its
// pod CIDR (none when cidr is invalid).
func (k *kubeCluster) createNode(ctx context.Context, name string, cidr netip.Prefix) {
	k.t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if cidr.IsValid() {
		node.Spec.PodCIDR = cidr.String()
		node.Spec.PodCIDRs = []string{cidr.String()}
	}
	if _, err := k.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create node %s: %v", name, err)
	}
}

// assignPodCIDR does what kube-controller-manager's node IPAM does for a
// node that registered without a range.
func (k *kubeCluster) assignPodCIDR(ctx context.Context, name string, cidr netip.Prefix) {
	k.t.Helper()
	patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, cidr, cidr)
	if _, err := k.cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		k.t.Fatalf("assign pod cidr %s to node %s: %v", cidr, name, err)
	}
}

func (k *kubeCluster) node(ctx context.Context, name string) *corev1.Node {
	k.t.Helper()
	node, err := k.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatalf("get node %s: %v", name, err)
	}
	return node
}

// netConf writes net-conf.json into the node's directory, as the
// kube-flannel-cfg ConfigMap mount would, and returns its path.
func netConf(t testing.TB, n *testbed.Node, content string) string {
	t.Helper()
	path := filepath.Join(n.Dir, "net-conf.json")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeRun is how flanneld is started on one node in kube mode.
type kubeRun struct {
	kubeconfig string
	netConf    string   // --net-config-path
	env        []string // default NODE_NAME=<node name>, as the DaemonSet's downward API
	args       []string
}

// startKube starts flanneld with --kube-subnet-mgr on n (without waiting).
func (k *kubeCluster) startKube(n *testbed.Node, r kubeRun) {
	k.t.Helper()
	if r.env == nil {
		r.env = []string{"NODE_NAME=" + n.Name}
	}
	if r.netConf == "" {
		r.netConf = netConf(k.t, n, onDatapath(defaultConfig))
	}
	args := append([]string{
		"--kube-subnet-mgr", "--kubeconfig-file=" + r.kubeconfig, "--net-config-path=" + r.netConf,
	}, r.args...)
	if err := k.StartFlanneldEnv(testCtx(k.t, time.Minute), n, r.env, args...); err != nil {
		k.t.Fatalf("%v", err)
	}
}

// startReady starts flanneld on each node and waits for a subnet.env
// written by this run, like cluster.start.
func (k *kubeCluster) startReady(nodes []*testbed.Node, r kubeRun) map[*testbed.Node]*subnetenv.Env {
	k.t.Helper()
	started := time.Now()
	for _, n := range nodes {
		k.startKube(n, r)
	}
	return k.waitReady(nodes, started, time.Minute)
}

// waitLog waits until the node's flanneld log matches re and returns the
// match; it fails early if flanneld exits, since every message these tests
// wait for is one flanneld must report while it keeps running.
func waitLog(t *testing.T, c *cluster, n *testbed.Node, re *regexp.Regexp, within time.Duration) []string {
	t.Helper()
	var m []string
	eventually(t, within, fmt.Sprintf("flanneld log of %s matches %q", n.Name, re), func() error {
		b, _ := os.ReadFile(n.LogFile)
		if m = re.FindStringSubmatch(string(b)); m != nil {
			return nil
		}
		if p := c.Flanneld(n); p != nil && !p.Running() {
			t.Fatalf("flanneld on %s exited (%v) without logging %q:\n%s", n.Name, p.Wait(), re, tailFile(n.LogFile, 30))
		}
		return errors.New("no match yet")
	})
	return m
}

// checkAnnotations asserts what a ready node publishes, with upstream
// flannel's names and values.
func (k *kubeCluster) checkAnnotations(ctx context.Context, n *testbed.Node) {
	t := k.t
	t.Helper()
	ann := k.node(ctx, n.Name).Annotations
	want := map[string]string{
		annPrefix + "backend-type":        "vxlan",
		annPrefix + "public-ip":           n.Addr.String(),
		annPrefix + "kube-subnet-manager": "true",
	}
	for key, v := range want {
		if ann[key] != v {
			t.Errorf("node %s annotation %s = %q, want %q", n.Name, key, ann[key], v)
		}
	}
	var data struct {
		VNI     int
		VtepMAC string
	}
	raw := ann[annPrefix+"backend-data"]
	if err := json.Unmarshal([]byte(raw), &data); err != nil {
		t.Errorf("node %s annotation backend-data %q: %v", n.Name, raw, err)
		return
	}
	mac, err := vtepMAC(n.NS)
	if err != nil {
		t.Error(err)
		return
	}
	if data.VtepMAC != mac {
		t.Errorf("node %s backend-data VtepMAC %q, want flannel.1's address %s", n.Name, data.VtepMAC, mac)
	}
}

func vtepMAC(ns string) (string, error) {
	var mac string
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		d, err := k.Device("flannel.1")
		if err != nil {
			return err
		}
		mac = d.MAC.String()
		return nil
	})
	return mac, err
}

// networkUnavailable returns the node's NetworkUnavailable condition, or
// nil when it has none.
func (k *kubeCluster) networkUnavailable(ctx context.Context, name string) (*corev1.NodeCondition, error) {
	node, err := k.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	for i, c := range node.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return &node.Status.Conditions[i], nil
		}
	}
	return nil, nil
}

// metricsPort is where flanneld serves /metrics in tests that read it; on
// loopback inside the node's namespace, so only the test reaches it.
const metricsPort = 10244

var metricsArgs = []string{"--healthz-ip=127.0.0.1", "--healthz-port=" + strconv.Itoa(metricsPort)}

// metric reads one unlabelled sample from flanneld's /metrics on node n.
func metric(ctx context.Context, n *testbed.Node, name string) (float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, n.NS, network, addr)
		},
	}}
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("node %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("node %s: read %s: %w", n.Name, url, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("node %s: no %s in %s", n.Name, name, url)
}

// manifest holds the objects of deploy/kube-flannel.yml that give flanneld
// its identity.
type manifest struct {
	namespace *corev1.Namespace
	account   *corev1.ServiceAccount
	role      *rbacv1.ClusterRole
	binding   *rbacv1.ClusterRoleBinding
}

const manifestPath = "../../deploy/kube-flannel.yml"

// readManifest decodes the deploy manifest as it is now, so the test
// checks whatever RBAC the manifest grants.
func readManifest(t *testing.T) *manifest {
	t.Helper()
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifest(t, data)
}

// readManifestWithNetworkPolicy is readManifest with the lines the
// manifest keeps commented out for --network-policy (the flag and the
// ClusterRole rules it needs) uncommented, as an operator turns it on.
func readManifestWithNetworkPolicy(t *testing.T) *manifest {
	t.Helper()
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	data, err = deploy.WithNetworkPolicy(data)
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifest(t, data)
}

func decodeManifest(t *testing.T, data []byte) *manifest {
	t.Helper()
	var m manifest
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", manifestPath, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: decode: %v\n%s", manifestPath, err, doc)
		}
		m.keep(obj)
	}
	if m.namespace == nil || m.account == nil || m.role == nil || m.binding == nil {
		t.Fatalf("%s lacks one of Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding", manifestPath)
	}
	return &m
}

func (m *manifest) keep(obj runtime.Object) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		m.namespace = o
	case *corev1.ServiceAccount:
		m.account = o
	case *rbacv1.ClusterRole:
		m.role = o
	case *rbacv1.ClusterRoleBinding:
		m.binding = o
	}
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// apply creates the manifest's identity objects and waits until RBAC grants
// every rule of its ClusterRole to its ServiceAccount.
func (k *kubeCluster) apply(ctx context.Context, m *manifest) {
	k.t.Helper()
	cs := k.cs
	if _, err := cs.CoreV1().Namespaces().Create(ctx, m.namespace, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create namespace %s: %v", m.namespace.Name, err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(m.account.Namespace).Create(ctx, m.account, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create serviceaccount %s/%s: %v", m.account.Namespace, m.account.Name, err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, m.role, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create clusterrole %s: %v", m.role.Name, err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, m.binding, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create clusterrolebinding %s: %v", m.binding.Name, err)
	}
	for _, p := range permissions(m.role.Rules) {
		if err := waitGranted(ctx, cs, m.account.Namespace, m.account.Name, p); err != nil {
			k.t.Fatal(err)
		}
	}
}

// flannelKubeconfig applies the deploy manifest m and returns a kubeconfig
// holding its ServiceAccount's token: flanneld's identity in the cluster,
// exactly as deploy/kube-flannel.yml grants it.
func (k *kubeCluster) flannelKubeconfig(ctx context.Context, m *manifest) string {
	k.t.Helper()
	k.apply(ctx, m)
	token, err := k.api.ServiceAccountToken(ctx, m.account.Namespace, m.account.Name, time.Hour)
	if err != nil {
		k.t.Fatal(err)
	}
	kubeconfig := filepath.Join(k.t.TempDir(), "flannel.kubeconfig")
	if err := k.api.WriteTokenKubeconfig(kubeconfig, token); err != nil {
		k.t.Fatal(err)
	}
	return kubeconfig
}

// permission is one verb on one (sub)resource of an API group ("" is
// the core group).
type permission struct{ verb, resource, group string }

func (p permission) String() string { return fmt.Sprintf("%q on %q", p.verb, p.resource) }

func permissions(rules []rbacv1.PolicyRule) []permission {
	var out []permission
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, permission{v, res, g})
				}
			}
		}
	}
	return out
}

// without copies rules leaving out p; a rule left without verbs goes.
func without(rules []rbacv1.PolicyRule, p permission) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		for _, res := range r.Resources {
			keep := r.DeepCopy()
			keep.Resources = []string{res}
			keep.Verbs = nil
			for _, v := range r.Verbs {
				if res != p.resource || v != p.verb || !slices.Contains(r.APIGroups, p.group) {
					keep.Verbs = append(keep.Verbs, v)
				}
			}
			if len(keep.Verbs) > 0 {
				out = append(out, *keep)
			}
		}
	}
	return out
}

// waitGranted waits until the authorizer allows the ServiceAccount p: it
// learns of new bindings through an informer, moments after they are
// written.
func waitGranted(ctx context.Context, cs kubernetes.Interface, namespace, name string, p permission) error {
	resource, sub, _ := strings.Cut(p.resource, "/")
	return kubetest.WaitAuthorized(ctx, cs, namespace, name, authzv1.ResourceAttributes{
		Verb: p.verb, Group: p.group, Resource: resource, Subresource: sub,
	})
}
