package kube

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

func mustConfig(t *testing.T, js string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const v4Conf = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
const dualConf = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`

func mustKeys(t *testing.T) keys {
	t.Helper()
	k, err := newKeys(DefaultAnnotationPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func node(name string, ann map[string]string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
		n.Spec.PodCIDRs = cidrs
	}
	return n
}

func flannelAnn(publicIP string) map[string]string {
	return map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}`,
		"flannel.alpha.coreos.com/public-ip":           publicIP,
	}
}

func TestNewKeysRefusesBadPrefix(t *testing.T) {
	for _, p := range []string{"bad prefix", "UPPER_case.example.com/x", "-x.example.com"} {
		if _, err := newKeys(p); err == nil || !strings.Contains(err.Error(), "--kube-annotation-prefix") {
			t.Errorf("newKeys(%q) = %v, want an error naming the flag", p, err)
		}
	}
	if _, err := newKeys("example.com/"); err != nil {
		t.Errorf("trailing slash: %v", err)
	}
}

// --kube-annotation-prefix joins the names as upstream does: a domain gets
// a slash, a domain/name gets a dash.
func TestNewKeysJoinsPrefixAsUpstream(t *testing.T) {
	for prefix, want := range map[string]string{
		"flannel.alpha.coreos.com":         "flannel.alpha.coreos.com/backend-data",
		"flannel.alpha.coreos.com/":        "flannel.alpha.coreos.com/backend-data",
		"example.com/flannel":              "example.com/flannel-backend-data",
		"example.com/flannel-":             "example.com/flannel-backend-data",
		"org.com/9":                        "org.com/9-backend-data",
		"flannel.alpha.coreos.com/prefix-": "flannel.alpha.coreos.com/prefix-backend-data",
	} {
		k, err := newKeys(prefix)
		if err != nil {
			t.Errorf("newKeys(%q): %v", prefix, err)
			continue
		}
		if k.backendData != want {
			t.Errorf("newKeys(%q): backend-data key %q, want %q", prefix, k.backendData, want)
		}
		if wantIP := strings.TrimSuffix(want, "backend-data") + "node-public-ipv6"; k.nodePublicIPv6 != wantIP {
			t.Errorf("newKeys(%q): node-public-ipv6 key %q, want %q", prefix, k.nodePublicIPv6, wantIP)
		}
	}
	for _, bad := range []string{"org", "org/", "org/prefix", "a.com/b/c", "org.COM", "org.com/PREFIX"} {
		if _, err := newKeys(bad); err == nil {
			t.Errorf("newKeys(%q) succeeded, want an error", bad)
		}
	}
}

// The node-public-ip(v6) annotations give the node's public addresses; a
// malformed one is an error naming it.
func TestNodePublicAnnotations(t *testing.T) {
	k := mustKeys(t)
	n := node("n1", map[string]string{
		"flannel.alpha.coreos.com/node-public-ip":   "198.51.100.77",
		"flannel.alpha.coreos.com/node-public-ipv6": "fd00:198:51:100::77",
	})
	v4, v6, err := k.nodePublic(n)
	if err != nil || v4 != netip.MustParseAddr("198.51.100.77") || v6 != netip.MustParseAddr("fd00:198:51:100::77") {
		t.Errorf("nodePublic = %v, %v, %v", v4, v6, err)
	}
	v4, v6, err = k.nodePublic(node("n2", nil))
	if err != nil || v4.IsValid() || v6.IsValid() {
		t.Errorf("no annotations: nodePublic = %v, %v, %v, want nothing", v4, v6, err)
	}
	_, _, err = k.nodePublic(node("n3", map[string]string{"flannel.alpha.coreos.com/node-public-ip": "fd00::1"}))
	if err == nil || !strings.Contains(err.Error(), "node-public-ip") {
		t.Errorf("IPv6 in node-public-ip: %v, want an error naming the annotation", err)
	}
}

func TestDesiredMatchesUpstreamAnnotations(t *testing.T) {
	k := mustKeys(t)
	attrs := lease.Attrs{
		PublicIP: netip.MustParseAddr("198.51.100.2"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}`),
	}
	got := k.desired(attrs, mustConfig(t, v4Conf))
	want := map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}`,
		"flannel.alpha.coreos.com/public-ip":           "198.51.100.2",
	}
	for key, v := range want {
		if got[key] == nil || *got[key] != v {
			t.Errorf("%s = %v, want %q", key, got[key], v)
		}
	}
	for _, key := range []string{"flannel.alpha.coreos.com/public-ipv6", "flannel.alpha.coreos.com/backend-v6-data"} {
		if v, ok := got[key]; !ok || v != nil {
			t.Errorf("%s should be removed (nil), got %v present=%v", key, v, ok)
		}
	}
	// Dual stack and a backend without data (host-gw): "null" as upstream.
	attrs = lease.Attrs{PublicIP: attrs.PublicIP, PublicIPv6: netip.MustParseAddr("fd00:198:51:100::2"), BackendType: "host-gw"}
	got = k.desired(attrs, mustConfig(t, dualConf))
	if *got["flannel.alpha.coreos.com/backend-data"] != "null" || *got["flannel.alpha.coreos.com/backend-v6-data"] != "null" ||
		*got["flannel.alpha.coreos.com/public-ipv6"] != "fd00:198:51:100::2" {
		t.Errorf("dual stack host-gw: %v", deref(got))
	}
}

func deref(m map[string]*string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v == nil {
			out[k] = "<nil>"
		} else {
			out[k] = *v
		}
	}
	return out
}

func TestChanges(t *testing.T) {
	s := func(v string) *string { return &v }
	want := map[string]*string{"a": s("1"), "b": s("2"), "gone": nil, "absent": nil}
	have := map[string]string{"a": "1", "b": "old", "gone": "x", "other": "keep"}
	got := changes(have, want)
	if len(got) != 2 || *got["b"] != "2" || got["gone"] != nil {
		t.Fatalf("changes = %v", deref(got))
	}
	if _, ok := got["gone"]; !ok {
		t.Fatal("stale key not removed")
	}
	if changes(map[string]string{"a": "1", "b": "2"}, want) != nil {
		t.Fatal("no-op patch should be nil")
	}
	if got := changes(nil, want); len(got) != 2 {
		t.Fatalf("bare node: %v", deref(got))
	}
}

func TestOverwrite(t *testing.T) {
	k := mustKeys(t)
	attrs := lease.Attrs{PublicIP: netip.MustParseAddr("198.51.100.2")}
	n := node("n1", map[string]string{"flannel.alpha.coreos.com/public-ip-overwrite": "203.0.113.7"})
	got, err := k.overwrite(n, attrs)
	if err != nil || got.PublicIP != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("overwrite = %v, %v", got.PublicIP, err)
	}
	n = node("n1", map[string]string{"flannel.alpha.coreos.com/public-ipv6-overwrite": "fd00:198:51:100::9"})
	if got, err = k.overwrite(n, attrs); err != nil || got.PublicIPv6 != netip.MustParseAddr("fd00:198:51:100::9") || got.PublicIP != attrs.PublicIP {
		t.Fatalf("v6 overwrite = %+v, %v", got, err)
	}
	for _, bad := range []string{"nonsense", "fd00::1"} {
		n = node("n1", map[string]string{"flannel.alpha.coreos.com/public-ip-overwrite": bad})
		if _, err := k.overwrite(n, attrs); err == nil || !strings.Contains(err.Error(), "public-ip-overwrite") {
			t.Errorf("overwrite %q: %v", bad, err)
		}
	}
	if got, err := k.overwrite(node("bare", nil), attrs); err != nil || !sameAttrs(got, attrs) {
		t.Fatalf("bare node: %+v %v", got, err)
	}
}

func TestLeaseSubnets(t *testing.T) {
	v4 := mustConfig(t, v4Conf)
	dual := mustConfig(t, dualConf)
	for _, tc := range []struct {
		name    string
		node    *corev1.Node
		cfg     *config.Config
		v4, v6  string
		wantErr []string
	}{
		{"v4", node("n1", nil, "10.244.3.0/24"), v4, "10.244.3.0/24", "", nil},
		{"legacy PodCIDR only", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.4.0/24"}}, v4, "10.244.4.0/24", "", nil},
		{"dual stack node, v4 network", node("n1", nil, "10.244.3.0/24", "fd00:10:244:3::/64"), v4, "10.244.3.0/24", "", nil},
		{"dual", node("n1", nil, "10.244.3.0/24", "fd00:10:244:3::/64"), dual, "10.244.3.0/24", "fd00:10:244:3::/64", nil},
		{"unmasked", node("n1", nil, "10.244.3.7/24"), v4, "10.244.3.0/24", "", nil},
		{"none", node("n1", nil), v4, "", "", []string{errNotAssigned.Error()}},
		{"outside", node("n1", nil, "10.99.1.0/24"), v4, "", "", []string{`"n1"`, "10.99.1.0/24", "10.244.0.0/16"}},
		{"wider than network", node("n1", nil, "10.0.0.0/8"), v4, "", "", []string{"10.0.0.0/8", "10.244.0.0/16"}},
		{"v6 outside", node("n1", nil, "10.244.3.0/24", "fd00:99::/64"), dual, "", "", []string{"fd00:99::/64", "fd00:10:244::/56"}},
		{"missing v6", node("n1", nil, "10.244.3.0/24"), dual, "", "", []string{"no IPv6 pod cidr", "fd00:10:244::/56"}},
		{"garbage", node("n1", nil, "ten/24"), v4, "", "", []string{`"ten/24"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g4, g6, err := leaseSubnets(tc.node, tc.cfg)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, got %v %v", g4, g6)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g4.String() != orInvalid(tc.v4) || g6.String() != orInvalid(tc.v6) {
				t.Fatalf("got %v %v, want %s %s", g4, g6, tc.v4, tc.v6)
			}
		})
	}
}

func orInvalid(s string) string {
	if s == "" {
		return netip.Prefix{}.String()
	}
	return s
}

func TestNodeLease(t *testing.T) {
	k := mustKeys(t)
	cfg := mustConfig(t, v4Conf)
	l, ok, err := k.nodeLease(node("n2", flannelAnn("198.51.100.3"), "10.244.2.0/24"), cfg)
	if err != nil || !ok {
		t.Fatalf("nodeLease = %v %v", ok, err)
	}
	if l.Key() != "10.244.2.0-24" || l.Attrs.PublicIP != netip.MustParseAddr("198.51.100.3") || l.Attrs.BackendType != "vxlan" ||
		string(l.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}` {
		t.Fatalf("lease %+v", l)
	}

	// Not (yet) flannel nodes: quietly skipped.
	for _, n := range []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "bare"}},               // nil maps everywhere
		node("nocidr", flannelAnn("198.51.100.4")),                  // annotated, no pod CIDR
		node("plain", map[string]string{"x": "y"}, "10.244.5.0/24"), // pod CIDR, no annotations
		node("other-mgr", map[string]string{ // flannel with etcd writes no kube-subnet-manager
			"flannel.alpha.coreos.com/backend-type": "vxlan", "flannel.alpha.coreos.com/public-ip": "198.51.100.5",
		}, "10.244.6.0/24"),
	} {
		if _, ok, err := k.nodeLease(n, cfg); ok || err != nil {
			t.Errorf("node %s: ok=%v err=%v, want skipped", n.Name, ok, err)
		}
	}

	// Flannel nodes whose annotations are unusable: reported.
	badIP := flannelAnn("not-an-ip")
	noIP := flannelAnn("")
	badData := flannelAnn("198.51.100.6")
	badData["flannel.alpha.coreos.com/backend-data"] = "{"
	for name, ann := range map[string]map[string]string{"bad-ip": badIP, "no-ip": noIP, "bad-data": badData} {
		if _, ok, err := k.nodeLease(node(name, ann, "10.244.7.0/24"), cfg); ok || err == nil {
			t.Errorf("node %s: ok=%v err=%v, want an error", name, ok, err)
		}
	}
	// "null" backend data (host-gw) is no data.
	hg := flannelAnn("198.51.100.8")
	hg["flannel.alpha.coreos.com/backend-data"] = "null"
	if l, ok, err := k.nodeLease(node("hg", hg, "10.244.8.0/24"), cfg); !ok || err != nil || l.Attrs.BackendData != nil {
		t.Errorf("host-gw node: %+v %v %v", l, ok, err)
	}
}

func TestReadNetConfMessages(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.json")
	_, err := readNetConf(missing)
	if err == nil || !strings.HasPrefix(err.Error(), "failed to read net conf: "+missing+": ") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if strings.Count(err.Error(), missing) != 1 {
		t.Errorf("path repeated: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"Network":`), 0o644)
	if _, err := readNetConf(bad); err == nil || !strings.HasPrefix(err.Error(), "error parsing subnet config: ") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("malformed: %v", err)
	}
	invalid := filepath.Join(dir, "invalid.json")
	os.WriteFile(invalid, []byte(`{"Network":"banana"}`), 0o644)
	if _, err := readNetConf(invalid); err == nil || !strings.HasPrefix(err.Error(), "error parsing subnet config: ") {
		t.Fatalf("invalid: %v", err)
	}
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(v4Conf), 0o644)
	if cfg, err := readNetConf(good); err != nil || cfg.Network != netip.MustParsePrefix("10.244.0.0/16") {
		t.Fatalf("good: %v %v", cfg, err)
	}
}

func TestRefreshDiffs(t *testing.T) {
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	w := newNodeWatcher(mustKeys(t), mustConfig(t, v4Conf), store)
	if got := w.snapshot(); got == nil || len(got) != 0 {
		t.Fatalf("empty snapshot = %#v, want empty non-nil", got)
	}
	store.Add(node("n1", flannelAnn("198.51.100.2"), "10.244.1.0/24"))
	store.Add(node("bare", nil))
	got := w.refresh([]string{"bare", "n1"})
	if len(got) != 1 || got[0].Type != lease.Added || got[0].Lease.Key() != "10.244.1.0-24" {
		t.Fatalf("add: %v", got)
	}
	if got := w.refresh([]string{"n1"}); len(got) != 0 {
		t.Fatalf("unchanged node produced %v", got)
	}
	store.Update(node("n1", flannelAnn("198.51.100.9"), "10.244.1.0/24"))
	if got := w.refresh([]string{"n1"}); len(got) != 1 || got[0].Type != lease.Added || got[0].Lease.Attrs.PublicIP.String() != "198.51.100.9" {
		t.Fatalf("change: %v", got)
	}
	store.Update(node("n1", flannelAnn("198.51.100.9"), "10.244.9.0/24"))
	got = w.refresh([]string{"n1"})
	if len(got) != 2 || got[0].Type != lease.Removed || got[0].Lease.Key() != "10.244.1.0-24" || got[1].Lease.Key() != "10.244.9.0-24" {
		t.Fatalf("subnet change: %v", got)
	}
	store.Update(node("n1", map[string]string{}, "10.244.9.0/24"))
	if got := w.refresh([]string{"n1"}); len(got) != 1 || got[0].Type != lease.Removed {
		t.Fatalf("annotations removed: %v", got)
	}
	store.Update(node("n1", flannelAnn("198.51.100.9"), "10.244.9.0/24"))
	w.refresh([]string{"n1"})
	store.Delete(node("n1", nil))
	if got := w.refresh([]string{"n1"}); len(got) != 1 || got[0].Type != lease.Removed || got[0].Lease.Key() != "10.244.9.0-24" {
		t.Fatalf("delete: %v", got)
	}
}

func TestDirtySetCoalesces(t *testing.T) {
	d := newDirtySet()
	d.addObj(node("b", nil))
	d.addObj(node("a", nil))
	d.addObj(node("b", nil))
	d.addObj(cache.DeletedFinalStateUnknown{Key: "c", Obj: node("c", nil)})
	select {
	case <-d.ready:
	default:
		t.Fatal("no ready token")
	}
	if got := d.take(); strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("take = %v", got)
	}
	if got := d.take(); len(got) != 0 {
		t.Fatalf("second take = %v", got)
	}
}

func TestRestConfigChoice(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := restConfig(Options{}); err == nil || !strings.Contains(err.Error(), "--kube-api-url") {
		t.Fatalf("no config outside a pod: %v", err)
	}
	rc, err := restConfig(Options{APIURL: "https://127.0.0.1:6443"})
	if err != nil || rc.Host != "https://127.0.0.1:6443" || !strings.HasPrefix(rc.UserAgent, "flanneld/") {
		t.Fatalf("api url: %+v %v", rc, err)
	}
	if _, err := restConfig(Options{Kubeconfig: filepath.Join(t.TempDir(), "nope")}); err == nil || !strings.Contains(err.Error(), "--kubeconfig-file") {
		t.Fatalf("missing kubeconfig: %v", err)
	}
}

// TestSlimKeepsWhatLeasesNeed: the informer's transform drops everything a
// production node carries that flannel does not read, and the lease read
// from the slim node is the one read from the full node.
func TestSlimKeepsWhatLeasesNeed(t *testing.T) {
	k := mustKeys(t)
	cfg := mustConfig(t, v4Conf)
	ann := flannelAnn("198.51.100.2")
	ann["node.alpha.kubernetes.io/ttl"] = "0"
	ann["flannel.alpha.coreos.com.example/other"] = "not ours" // shares the prefix but not the slash
	full := node("n1", ann, "10.244.1.0/24")
	full.UID, full.ResourceVersion = "uid-1", "42"
	full.Labels = map[string]string{"kubernetes.io/hostname": "n1"}
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	full.Spec.ProviderID = "aws:///eu-west-1a/i-1"
	full.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example.com/app:v1"}, SizeBytes: 1}}
	full.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	full.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.2"}}

	obj, err := k.slim(full)
	if err != nil {
		t.Fatal(err)
	}
	slim := obj.(*corev1.Node)
	want := node("n1", flannelAnn("198.51.100.2"), "10.244.1.0/24")
	want.UID, want.ResourceVersion = "uid-1", "42"
	if !apiequality(slim, want) {
		t.Fatalf("slim node = %+v\nwant %+v", slim, want)
	}
	lf, okf, errf := k.nodeLease(full, cfg)
	ls, oks, errs := k.nodeLease(slim, cfg)
	if !okf || !oks || errf != nil || errs != nil || lf.Key() != ls.Key() || !sameAttrs(lf.Attrs, ls.Attrs) {
		t.Fatalf("lease from full node %v (%v, %v), from slim node %v (%v, %v)", lf, okf, errf, ls, oks, errs)
	}
	if other, _ := k.slim("not a node"); other != "not a node" {
		t.Fatalf("slim changed a non-node: %v", other)
	}
}

func apiequality(a, b *corev1.Node) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// The backend annotations this node published last time are read back
// for the backend to resume (the VXLAN MAC after a reboot, as upstream).
func TestStoredBackend(t *testing.T) {
	k := mustKeys(t)
	typ, v4, v6 := k.storedBackend(node("n1", map[string]string{
		"flannel.alpha.coreos.com/backend-type":    "vxlan",
		"flannel.alpha.coreos.com/backend-data":    `{"VNI":1,"VtepMAC":"ae:11:22:33:44:55"}`,
		"flannel.alpha.coreos.com/backend-v6-data": `not json`,
	}))
	if typ != "vxlan" || string(v4) != `{"VNI":1,"VtepMAC":"ae:11:22:33:44:55"}` || v6 != nil {
		t.Errorf("storedBackend = %q, %s, %s; want vxlan, the backend-data value and nothing for the invalid v6 one", typ, v4, v6)
	}
	if typ, v4, v6 := k.storedBackend(node("n2", nil)); typ != "" || v4 != nil || v6 != nil {
		t.Errorf("no annotations: storedBackend = %q, %s, %s", typ, v4, v6)
	}
}

func sameAttrs(a, b lease.Attrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 && a.BackendType == b.BackendType &&
		string(a.BackendData) == string(b.BackendData) && string(a.BackendV6Data) == string(b.BackendV6Data)
}
