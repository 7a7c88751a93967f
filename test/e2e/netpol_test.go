package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// npRun is how flanneld runs on the policy testbed's nodes, with the admin
// kubeconfig unless one is given.
func npRun(k *kubeCluster, policy bool, kubeconfig ...string) kubeRun {
	// --ip-masq as deploy/kube-flannel.yml: without it the flannel CNI
	// plugin has the bridge plugin masquerade pod traffic leaving the node.
	args := append(slices.Clone(metricsArgs), "--ip-masq")
	if policy {
		args = append(args, "--network-policy", "-v=2")
	}
	r := kubeRun{kubeconfig: k.api.AdminKubeconfig, args: args}
	if len(kubeconfig) > 0 {
		r.kubeconfig = kubeconfig[0]
	}
	return r
}

// newNPCluster is three nodes running flanneld --network-policy against a
// real kube-apiserver, with the world of pods in it. flanneld has the
// identity deploy/kube-flannel.yml gives it with its --network-policy
// lines uncommented: that ClusterRole must suffice.
func newNPCluster(t *testing.T, extraArgs ...string) *npCluster {
	k := newKubeCluster(t, "netpol", 3)
	ctx := testCtx(t, 3*time.Minute)
	m := readManifestWithNetworkPolicy(t)
	kubeconfig := k.flannelKubeconfig(ctx, m)
	for _, n := range k.Nodes {
		k.createNode(ctx, n.Name, podCIDR(n.Index))
	}
	r := npRun(k, true, kubeconfig)
	r.args = append(r.args, extraArgs...)
	k.startReady(k.Nodes, r)
	l := &npCluster{kubeCluster: k, kubeconfig: kubeconfig}
	l.createWorld(ctx)
	return l
}

func (l *npCluster) with(t *testing.T) *npCluster {
	return &npCluster{kubeCluster: l.kubeCluster.with(t), pods: l.pods, servers: l.servers, kubeconfig: l.kubeconfig}
}

// flanneld --network-policy on three nodes enforces the cases of the
// Kubernetes NetworkPolicy e2e suite: after each change, every pod of
// namespaces x, y, z tries every other on TCP and UDP 80 and 81, and the
// whole matrix must be as the API defines. The model that flannelctl
// policy explain prints from must say the same. Then: how fast changes
// take effect, the drop counters, and what a restart and turning the flag
// off do.
func TestNetworkPolicy(t *testing.T) {
	l := newNPCluster(t)
	ctx := testCtx(t, 15*time.Minute)
	if !t.Run("baseline all allowed", func(t *testing.T) {
		l.with(t).check(ctx, allowAll)
	}) {
		return
	}
	var syncs []time.Duration
	t.Run("cases", func(t *testing.T) {
		for i, c := range npCases() {
			t.Run(npCaseName(i, c), func(t *testing.T) {
				l := l.with(t)
				defer l.resetSynced(ctx)
				for _, st := range c.steps {
					syncs = append(syncs, l.change(ctx, func() { st.apply(ctx, l) }))
					l.check(ctx, st.want)
					l.checkModel(ctx, st.want)
				}
			})
		}
	})
	p50, p99 := percentiles(syncs)
	t.Logf("API write to rules loaded on all 3 nodes, over %d changes: p50 %s, p99 %s", len(syncs), p50, p99)
	t.Run("changes take effect within 1s", func(t *testing.T) { testNPLatency(ctx, l.with(t)) })
	t.Run("drop counters and active policies", func(t *testing.T) { testNPMetrics(ctx, l.with(t)) })
	t.Run("explain command", func(t *testing.T) { testNPExplain(ctx, l.with(t)) })
	t.Run("restart keeps rules until replaced, flag off removes them", func(t *testing.T) { testNPRestart(ctx, l.with(t)) })
	for _, n := range l.Nodes {
		if log, _ := os.ReadFile(n.LogFile); strings.Contains(string(log), "forbidden") {
			t.Errorf("flanneld on %s was refused something with the manifest's ClusterRole:\n%s", n.Name, grep(log, "forbidden"))
		}
	}
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[int(math.Ceil(q*float64(len(s))))-1].Round(time.Millisecond) }
	return at(0.5), at(0.99)
}

// flip measures how long after write starts the traffic from -> to (TCP
// 80) shows the new state: probes start every 10 ms, and the effect time
// is the start of the first probe from which on every probe sees it.
func (l *npCluster) flip(ctx context.Context, from, to *npPod, allowed bool, write func()) time.Duration {
	l.t.Helper()
	type result struct {
		at time.Duration
		ok bool
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	start := time.Now()
	write()
	for time.Since(start) < 5*time.Second {
		at := time.Since(start)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			ok := probe(ctx, from.tbPod, to.tbPod.IP, 80, "tcp")
			mu.Lock()
			results = append(results, result{at, ok})
			mu.Unlock()
		})
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		n := 0
		for _, r := range results {
			if r.ok == allowed {
				n++
			}
		}
		mu.Unlock()
		if n >= 10 {
			break
		}
	}
	wg.Wait()
	slices.SortFunc(results, func(a, b result) int { return int(a.at - b.at) })
	effect := time.Duration(-1)
	for i := len(results) - 1; i >= 0 && results[i].ok == allowed; i-- {
		effect = results[i].at
	}
	if effect < 0 {
		l.t.Fatalf("%s -> %s never became allowed=%v within 5s", from, to, allowed)
	}
	return effect
}

func testNPLatency(ctx context.Context, l *npCluster) {
	from, to := l.pod("y/b"), l.pod("x/a")
	const rounds = 10
	kinds := []struct {
		name   string
		setup  func()
		on     func() // makes from -> to denied (or allowed, see onAllows)
		off    func()
		onAllo bool
	}{
		{"policy created/deleted", func() {},
			func() {
				l.createPolicy(ctx, "x", "lat-deny", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npIngress})
			},
			func() { l.deletePolicy(ctx, "x", "lat-deny") }, false},
		{"pod label", func() {
			l.change(ctx, func() {
				l.createPolicy(ctx, "x", "lat-iso", npSpec{PodSelector: *lsel("target", "isolated"), PolicyTypes: npIngress})
			})
		}, func() { l.setLabels(ctx, "x/a", map[string]string{"pod": "a", "target": "isolated"}) },
			func() { l.setLabels(ctx, "x/a", map[string]string{"pod": "a"}) }, false},
		{"namespace label", func() {
			l.change(ctx, func() {
				l.createPolicy(ctx, "x", "lat-ns", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{From: []npPeer{{NamespaceSelector: lsel("access", "yes")}}}}})
			})
		}, func() { l.setLabels(ctx, "y", map[string]string{"ns": "y", "access": "yes"}) },
			func() { l.setLabels(ctx, "y", map[string]string{"ns": "y"}) }, true},
	}
	var all []time.Duration
	for _, k := range kinds {
		k.setup()
		var ds []time.Duration
		for range rounds {
			ds = append(ds, l.flip(ctx, from, to, k.onAllo, k.on))
			ds = append(ds, l.flip(ctx, from, to, !k.onAllo, k.off))
		}
		p50, p99 := percentiles(ds)
		l.t.Logf("%s: %s -> %s changed %d times, in effect after p50 %s, p99 %s (max %s)", k.name, from, to, len(ds), p50, p99, slices.Max(ds).Round(time.Millisecond))
		all = append(all, ds...)
		l.resetSynced(ctx)
	}
	p50, p99 := percentiles(all)
	l.t.Logf("all %d changes: p50 %s, p99 %s", len(all), p50, p99)
	if p99 > time.Second {
		l.t.Errorf("p99 %s: a change must take effect within 1s", p99)
	}
}

func testNPMetrics(ctx context.Context, l *npCluster) {
	from, to := l.pod("y/b"), l.pod("x/a")
	node0, node1 := l.Nodes[0], l.Nodes[1]
	name := `flannel_policy_dropped_packets_total{direction="ingress",namespace="x",pod="a"}`
	l.change(ctx, func() {
		l.createPolicy(ctx, "x", "deny-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npIngress})
	})
	defer l.resetSynced(ctx)
	before, err := metric(ctx, node0, name)
	if err != nil {
		l.t.Fatal(err)
	}
	const tries = 5
	for range tries {
		if probe(ctx, from.tbPod, to.tbPod.IP, 80, "udp") {
			l.t.Fatalf("%s -> %s allowed under deny-a", from, to)
		}
	}
	// The pod's own node still reaches it (kubelet probes), over TCP and UDP.
	for _, proto := range npProtos {
		if !probe(ctx, &testbed.Pod{Name: node0.Name, NS: node0.NS}, to.tbPod.IP, 80, proto) {
			l.t.Errorf("node %s cannot reach its pod %s on 80/%s under deny-a", node0.Name, to, proto)
		}
	}
	after, err := metric(ctx, node0, name)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Logf("%s on %s: %v -> %v after %d denied UDP probes", name, node0.Name, before, after, tries)
	if after-before < tries {
		l.t.Errorf("drop counter rose by %v, want at least %d", after-before, tries)
	}
	for _, c := range []struct {
		n    *testbed.Node
		want float64
	}{{node0, 1}, {node1, 0}} {
		if got, err := metric(ctx, c.n, "flannel_policy_active"); err != nil || got != c.want {
			l.t.Errorf("flannel_policy_active on %s = %v (%v), want %v: deny-a selects only x/a, on %s", c.n.Name, got, err, c.want, node0.Name)
		}
	}
}

// testNPRestart: flanneld stopping leaves the rules in force, stale but
// whole, until the next run's first sync replaces them in one
// transaction; flanneld started without --network-policy removes them.
func testNPRestart(ctx context.Context, l *npCluster) {
	t := l.t.(*testing.T)
	from, to, node := l.pod("y/b"), l.pod("x/a"), l.Nodes[0]
	denied := func(what string) {
		l.t.Helper()
		if probe(ctx, from.tbPod, to.tbPod.IP, 80, "tcp") {
			l.t.Fatalf("%s: %s -> %s allowed, want denied", what, from, to)
		}
	}
	l.change(ctx, func() {
		l.createPolicy(ctx, "x", "deny-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npIngress})
	})
	denied("deny-a in place")
	if err := l.StopFlanneld(node); err != nil {
		l.t.Fatal(err)
	}
	if tbl, err := nftTable(ctx, node); err != nil || !strings.Contains(tbl, `"in/x/a"`) {
		l.t.Fatalf("after flanneld stopped on %s the policy table is gone or lacks x/a (%v):\n%s", node.Name, err, tbl)
	}
	denied("flanneld stopped")
	l.deletePolicy(ctx, "x", "deny-a")
	time.Sleep(500 * time.Millisecond) // nobody is there to act on it: the stale rule must hold
	denied("policy deleted while flanneld is down")

	restarted := time.Now()
	l.startKube(node, npRun(l.kubeCluster, true, l.kubeconfig))
	took := eventually(t, 30*time.Second, "x/a reachable once flanneld is back", func() error {
		if !probe(ctx, from.tbPod, to.tbPod.IP, 80, "tcp") {
			return fmt.Errorf("%s -> %s still denied", from, to)
		}
		return nil
	})
	l.t.Logf("restarted flanneld replaced the stale rules %s after it started (%s after the check began)",
		time.Since(restarted).Round(time.Millisecond), took.Round(time.Millisecond))

	l.change(ctx, func() {
		l.createPolicy(ctx, "x", "deny-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npIngress})
	})
	denied("deny-a again")
	if err := l.StopFlanneld(node); err != nil {
		l.t.Fatal(err)
	}
	l.startKube(node, npRun(l.kubeCluster, false, l.kubeconfig))
	waitLog(t, l.cluster, node, regexp.MustCompile(`--network-policy is off: removed nftables table inet flannel-netpol`), 30*time.Second)
	if _, err := nftTable(ctx, node); err != errNoTable {
		l.t.Errorf("with --network-policy off the table is still there (%v)", err)
	}
	if !probe(ctx, from.tbPod, to.tbPod.IP, 80, "tcp") {
		l.t.Errorf("with --network-policy off %s -> %s is still denied", from, to)
	}
	_ = l.cs.NetworkingV1().NetworkPolicies("x").Delete(ctx, "deny-a", metav1.DeleteOptions{})
}

// testNPExplain runs the flannelctl binary against the API server and
// holds its verdicts to what the traffic does.
func testNPExplain(ctx context.Context, l *npCluster) {
	ctl := filepath.Join(bins.dir, "flannelctl")
	if err := goBuild(ctl, "./cmd/flannelctl"); err != nil {
		l.t.Fatal(err)
	}
	l.change(ctx, func() {
		l.createPolicy(ctx, "x", "allow-b", npSpec{PodSelector: *lsel("pod", "a"), Ingress: []npIn{{
			From: []npPeer{{PodSelector: lsel("pod", "b")}}, Ports: []npPort{pnum(corev1.ProtocolTCP, 80)}}}})
	})
	defer l.resetSynced(ctx)
	for _, c := range []struct {
		from, to      string
		port          int
		proto         string
		want, because string
	}{
		{"x/b", "x/a", 80, "tcp", "ALLOW: x/b -> x/a:80/TCP", "ingress of x/a:80/TCP: allowed by x/allow-b spec.ingress[0]"},
		{"y/b", "x/a", 80, "tcp", "DENY: y/b -> x/a:80/TCP", "denied: isolated by x/allow-b and no ingress rule of theirs matches"},
		{"x/b", "x/a", 81, "udp", "DENY: x/b -> x/a:81/UDP", "denied: isolated by x/allow-b"},
		{"x/a", "y/c", 81, "udp", "ALLOW: x/a -> y/c:81/UDP", "egress of x/a: allowed: no NetworkPolicy selects the pod for egress"},
	} {
		to := fmt.Sprintf("%s:%d/%s", c.to, c.port, strings.ToUpper(c.proto))
		// From a node: the API server listens on the underlay.
		out, err := testbed.Exec(ctx, l.Nodes[0].NS, ctl, "policy", "explain", "--from", c.from, "--to", to,
			"--kubeconfig", l.api.AdminKubeconfig)
		if err != nil {
			l.t.Fatalf("flannelctl policy explain --from %s --to %s: %v\n%s", c.from, to, err, out)
		}
		l.t.Logf("flannelctl policy explain --from %s --to %s:\n%s", c.from, to, out)
		if !strings.Contains(string(out), c.want) || !strings.Contains(string(out), c.because) {
			l.t.Errorf("explain says:\n%s\nwant %q and %q", out, c.want, c.because)
		}
		allowed := probe(ctx, l.pod(c.from).tbPod, l.pod(c.to).tbPod.IP, c.port, c.proto)
		if allowed != strings.HasPrefix(c.want, "ALLOW") {
			l.t.Errorf("%s -> %s: traffic allowed=%v, explain says %s", c.from, to, allowed, c.want)
		}
	}
}
