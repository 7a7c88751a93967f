// Package e2e proves flanneld's claims on real kernels: every test builds a
// cluster of network namespaces with internal/harness/testbed, runs the real
// flanneld binary in each node against a real etcd, and checks traffic and
// kernel state. Without root or a binary they need, tests fail in CI and
// skip elsewhere (tbtest.Unavailable).
package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// binaries are built once per test binary run, in TestMain.
type binaries struct {
	dir      string
	flanneld string
	buildErr error // of flanneld or the flannel CNI plugin
}

var bins binaries

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "flannel-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		bins = binaries{dir: dir, flanneld: filepath.Join(dir, "flanneld")}
		if os.Geteuid() == 0 {
			bins.buildErr = errors.Join(goBuild(bins.flanneld, "./cmd/flanneld"),
				goBuild(filepath.Join(dir, "flannel"), "./cmd/flannel"),
				goBuild(filepath.Join(dir, "flannelctl"), "./cmd/flannelctl"))
		}
		return m.Run()
	}()
	os.Exit(code)
}

// goBuild builds pkg (relative to the module root) into out.
func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// needNamespaces stops the test unless the machine can run a namespace cluster:
// a failure in CI, a skip elsewhere (tbtest.Unavailable).
func needNamespaces(t testing.TB) {
	t.Helper()
	tbtest.NeedRoot(t, "ip", "ping", "/usr/bin/etcd")
	if bins.buildErr != nil {
		t.Fatalf("building the binaries: %v", bins.buildErr)
	}
	if err := pods().CheckBinaries(); err != nil {
		tbtest.Unavailable(t, "e2e creates pods through CNI: %v", err)
	}
}

// cluster is a testbed with etcd running and a network config in it.
type cluster struct {
	*testbed.Testbed
	t   testing.TB
	raw []*testbed.Proc // flanneld processes started with startRaw
}

type clusterOpts struct {
	nodes    int
	segments int
	mtu      int
	ipv6     bool
	config   string // net-conf JSON; default vxlan over 10.244.0.0/16
}

const defaultConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

// onDatapath runs a test on the data path $FLANNEL_E2E_DATAPATH names
// ("ebpf": the whole suite as the eBPF fast path's specification): it adds
// "Datapath" to the host-gw and vxlan Backend objects of conf. Unset, conf
// is unchanged, and so is an IPv6-only conf (the fast path is IPv4's).
func onDatapath(conf string) string {
	dp := os.Getenv("FLANNEL_E2E_DATAPATH")
	if dp == "" || strings.Contains(conf, `"EnableIPv4":false`) {
		return conf
	}
	for _, typ := range []string{`"Type":"vxlan"`, `"Type":"host-gw"`} {
		conf = strings.ReplaceAll(conf, typ, typ+`,"Datapath":"`+dp+`"`)
	}
	return conf
}

// newCluster builds the namespaces and starts etcd; flanneld is started by
// the test. Everything goes away when the test ends, also on failure.
func newCluster(t testing.TB, name string, o clusterOpts) *cluster {
	t.Helper()
	needNamespaces(t)
	if o.config == "" {
		o.config = defaultConfig
	}
	o.config = onDatapath(o.config)
	ctx := testCtx(t, 2*time.Minute)
	state := filepath.Join(t.TempDir(), "testbed")
	name = taggedName(name)
	tb, err := testbed.New(ctx, testbed.Options{
		Name: name, Nodes: o.nodes, Segments: o.segments, UnderlayMTU: o.mtu, IPv6: o.ipv6,
		StateDir: state, FlanneldPath: bins.flanneld, KeepState: true,
	})
	if err != nil {
		t.Fatalf("build testbed: %v", err)
	}
	// Pods are made as a kubelet would: through the flannel CNI plugin.
	tb.PodNetworker = pods()
	c := &cluster{Testbed: tb, t: t}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
		if err := tb.Close(context.Background()); err != nil {
			t.Errorf("remove testbed %s: %v", name, err)
		}
	})
	if err := tb.StartEtcd(ctx); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	if err := tb.PutConfig(ctx, "", o.config); err != nil {
		t.Fatalf("put network config: %v", err)
	}
	return c
}

// taggedName appends $FLANNEL_E2E_TAG (a few letters) to a test's testbed name, so
// that copies of the suite in several work trees can run at the same time
// without their namespaces colliding.
func taggedName(name string) string { return name + os.Getenv("FLANNEL_E2E_TAG") }

func pods() *testbed.CNIPods { return &testbed.CNIPods{PluginDir: bins.dir} }

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dumpLogs prints the tail of every flanneld log, for a failed test.
func (c *cluster) dumpLogs() {
	for _, n := range c.Nodes {
		b, err := os.ReadFile(n.LogFile)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		c.t.Logf("--- flanneld log of %s (last %d lines)\n%s", n.Name, len(lines), strings.Join(lines, "\n"))
	}
}

// start runs flanneld on each node and waits for its subnet.env.
func (c *cluster) start(nodes []*testbed.Node, args ...string) map[*testbed.Node]*subnetenv.Env {
	c.t.Helper()
	ctx := testCtx(c.t, time.Minute)
	started := time.Now()
	for _, n := range nodes {
		if err := c.StartFlanneld(ctx, n, args...); err != nil {
			c.t.Fatalf("%v", err)
		}
	}
	return c.waitReady(nodes, started, time.Minute)
}

// waitReady waits in parallel for each node's subnet.env written after
// since.
func (c *cluster) waitReady(nodes []*testbed.Node, since time.Time, within time.Duration) map[*testbed.Node]*subnetenv.Env {
	c.t.Helper()
	ctx := testCtx(c.t, within)
	envs := map[*testbed.Node]*subnetenv.Env{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		wg.Go(func() {
			env, err := waitFresh(ctx, c.Flanneld(n), n, since)
			if err != nil {
				errs <- fmt.Errorf("node %s: %w", n.Name, err)
				return
			}
			mu.Lock()
			envs[n] = env
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
	return envs
}

// waitFresh waits for a subnet.env written after since: the one
// of an earlier run stays in place, as on a real node, since flanneld reads
// it to recognise its own lease.
func waitFresh(ctx context.Context, p *testbed.Proc, n *testbed.Node, since time.Time) (*subnetenv.Env, error) {
	for {
		if st, err := os.Stat(n.SubnetFile); err == nil && !st.ModTime().Before(since) {
			if env, err := subnetenv.Read(n.SubnetFile); err == nil {
				return env, nil
			}
		}
		select {
		case <-p.Done():
			log, _ := os.ReadFile(n.LogFile)
			return nil, fmt.Errorf("flanneld exited (%v) before writing %s:\n%s", p.Wait(), n.SubnetFile, log)
		case <-ctx.Done():
			return nil, fmt.Errorf("no fresh %s: %w", n.SubnetFile, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// addPods gives every node one pod.
func (c *cluster) addPods(nodes []*testbed.Node) []*testbed.Pod {
	c.t.Helper()
	ctx := testCtx(c.t, time.Minute)
	var pods []*testbed.Pod
	for _, n := range nodes {
		p, err := c.AddPod(ctx, n)
		if err != nil {
			c.t.Fatalf("%v", err)
		}
		pods = append(pods, p)
	}
	return pods
}

// requireKernelLacks is the whole test on a kernel without the module a
// backend needs (ipip, kernel WireGuard): flanneld on the first node must
// exit within 30 s with every one of wants in its log (the cause and the
// way out), and then the test skips with "kernel lacks <feature>: why".
func (c *cluster) requireKernelLacks(t *testing.T, feature, why string, wants ...string) {
	t.Helper()
	n := c.Nodes[0]
	if err := c.StartFlanneld(testCtx(t, time.Minute), n); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Flanneld(n).Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("flanneld kept running on a kernel without %s", feature)
	}
	log, _ := os.ReadFile(n.LogFile)
	for _, want := range wants {
		if !strings.Contains(string(log), want) {
			t.Errorf("flanneld's log lacks %q:\n%s", want, log)
		}
	}
	t.Skip("kernel lacks " + feature + ": " + why)
}

// eventually polls cond until it returns nil or the time is up
// (tbtest.Eventually).
func eventually(t *testing.T, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	return tbtest.Eventually(t, within, what, cond)
}

// ping checks one echo from a namespace, retrying for up to two seconds:
// the first packet to a new peer may race the neighbour programming.
func ping(ctx context.Context, fromNS string, to netip.Addr, size int, df bool) error {
	return testbed.PingWithin(ctx, fromNS, to, size, df, 2*time.Second)
}

// allPairsPing pings every ordered pair of pods on different nodes, fails
// the test for each that does not answer, and returns how many answered:
// a caller that wants 6 answering pairs learns it from the pings, not
// from the length of its own pod list.
func allPairsPing(t *testing.T, pods []*testbed.Pod) int {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	answered := 0
	for _, a := range pods {
		for _, b := range pods {
			if a.Node == b.Node {
				continue
			}
			if err := ping(ctx, a.NS, b.IP, 56, false); err != nil {
				t.Errorf("pod %s (%s) -> pod %s (%s): %v", a.Name, a.IP, b.Name, b.IP, err)
				continue
			}
			answered++
		}
	}
	return answered
}
