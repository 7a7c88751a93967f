package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// ErrCheckFailed is returned by Check when anything did not match.
var ErrCheckFailed = errors.New("lab check failed")

// checkParallel bounds concurrent probes (each is a `ping` process).
const checkParallel = 8

// failure is one line of the final table: what did not match, and why.
type failure struct{ what, why string }

type checker struct {
	spec *Spec
	tb   *recorded
	out  io.Writer
	envs map[string]*subnetenv.Env // by node name
	mtus map[string]int            // pod eth0 MTU by pod name
	pods []*testbed.Pod
	// leases reads the leases the walk checks against: etcd's, or the
	// nodes' annotations in a Kubernetes lab.
	leases func(context.Context) (map[netip.Prefix]lease.Attrs, error)

	mu       sync.Mutex
	failures []failure
	passed   int
}

func (c *checker) fail(what, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures = append(c.failures, failure{what, why})
}

func (c *checker) pass() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.passed++
}

// Check tests the lab in dir: connectivity of every pod pair and of every
// pod to every node, the MTU boundary of every pod pair against what
// FLANNEL_MTU promises, and the packet walk of one cross-node pair. It
// prints what it found and returns ErrCheckFailed unless all matched.
func Check(ctx context.Context, out io.Writer, dir string) error {
	if err := NeedRoot(); err != nil {
		return err
	}
	spec, err := ReadSpec(dir)
	if err != nil {
		return err
	}
	tb, err := loadTestbed(spec.Name, dir)
	if err != nil {
		return fmt.Errorf("%w; `flannelctl lab down --name %s` removes what is left", err, spec.Name)
	}
	if spec.Kube != nil {
		return checkKube(ctx, out, dir, spec, tb)
	}
	c := &checker{spec: spec, tb: tb, out: out, envs: map[string]*subnetenv.Env{}, mtus: map[string]int{},
		leases: func(ctx context.Context) (map[netip.Prefix]lease.Attrs, error) { return readLeases(ctx, tb.Testbed) }}
	fmt.Fprintf(out, "lab %s: backend %s, %d node(s), underlay MTU %d, pod MTU %s\n",
		spec.Name, spec.Backend, len(tb.Nodes), spec.UnderlayMTU, podMTUString(spec.PodMTU))
	c.checkProcesses()
	c.readNodes()
	conn := c.connectivity(ctx)
	c.mtuBoundaries(ctx, conn)
	c.dataPaths(func(n *testbed.Node) string { return n.SubnetFile })
	c.walk(ctx)
	return c.summary()
}

// checkLabProc: the lab process, which holds the lab's namespaces and
// processes, is alive (both kinds of lab).
func (c *checker) checkLabProc() {
	lp, err := readLabProc(c.tb.Opts.StateDir)
	if err != nil || !lp.alive() {
		c.fail("lab process", fmt.Sprintf("not running (crashed or killed?); see %s; `flannelctl lab down --name %s` and up again", LogPath(c.tb.Opts.StateDir), c.spec.Name))
		return
	}
	c.pass()
}

func (c *checker) checkProcesses() {
	c.checkLabProc()
	for _, n := range c.tb.Nodes {
		if c.tb.flanneld(n) == nil {
			c.fail("flanneld on "+n.Name, "not running; see "+n.LogFile)
		} else {
			c.pass()
		}
	}
}

func (c *checker) readNodes() {
	for _, n := range c.tb.Nodes {
		env, err := subnetenv.Read(n.SubnetFile)
		if err != nil {
			c.fail("subnet.env of "+n.Name, err.Error())
			continue
		}
		c.envs[n.Name] = env
		for _, p := range n.Pods {
			c.pods = append(c.pods, p)
			m, err := linkMTU(p.NS, "eth0")
			if err != nil {
				c.fail("pod "+p.Name, err.Error())
				continue
			}
			c.mtus[p.Name] = m
		}
	}
}

// pair is an ordered pair of pods.
type pair struct{ src, dst *testbed.Pod }

func (p pair) String() string { return p.src.Name + " -> " + p.dst.Name }

// parallelDo runs fn for 0..n-1 with at most checkParallel at once.
func parallelDo(n int, fn func(i int)) {
	sem := make(chan struct{}, checkParallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

// connectivity pings every pod from every pod and every node from every
// pod, prints both matrices and returns which pod pairs answered.
func (c *checker) connectivity(ctx context.Context) map[pair]bool {
	type probe struct {
		src  *testbed.Pod
		dst  netip.Addr
		name string
		pp   *pair
	}
	var probes []probe
	for _, s := range c.pods {
		for _, d := range c.pods {
			if s != d {
				probes = append(probes, probe{src: s, dst: d.IP, name: d.Name, pp: &pair{s, d}})
			}
		}
		for _, n := range c.tb.Nodes {
			probes = append(probes, probe{src: s, dst: n.Addr, name: n.Name})
		}
	}
	ok := make([]bool, len(probes))
	parallelDo(len(probes), func(i int) {
		ok[i] = reachable(ctx, probes[i].src.NS, probes[i].dst)
	})
	res := map[pair]bool{}
	cell := map[string]string{}
	for i, p := range probes {
		cell[p.src.Name+"|"+p.name] = "ok"
		if p.pp != nil {
			res[*p.pp] = ok[i]
		}
		if ok[i] {
			c.pass()
			continue
		}
		cell[p.src.Name+"|"+p.name] = "FAIL"
		c.fail("ping "+p.src.Name+" -> "+p.name+" ("+p.dst.String()+")", c.noReplyWhy(p.src, p.pp))
	}
	var podNames, nodeNames []string
	for _, p := range c.pods {
		podNames = append(podNames, p.Name)
	}
	for _, n := range c.tb.Nodes {
		nodeNames = append(nodeNames, n.Name)
	}
	fmt.Fprintf(c.out, "\nconnectivity, pod -> pod (%d pairs):\n", len(c.pods)*(len(c.pods)-1))
	c.matrix(podNames, podNames, cell)
	fmt.Fprintf(c.out, "\nconnectivity, pod -> node underlay address (%d pairs):\n", len(c.pods)*len(nodeNames))
	c.matrix(podNames, nodeNames, cell)
	return res
}

func (c *checker) noReplyWhy(src *testbed.Pod, pp *pair) string {
	if pp == nil {
		return "no reply in 3 tries; traffic leaving the pod network goes through " + src.Node.Name + "'s masquerade rule"
	}
	if pp.src.Node == pp.dst.Node {
		return "no reply in 3 tries between pods on the same bridge (cni0 on " + src.Node.Name + ")"
	}
	if env := c.envs[pp.dst.Node.Name]; env != nil {
		if why := flanneldComplaint(pp.src.Node, env.Subnet.Masked()); why != "" {
			return "no reply in 3 tries across nodes; flanneld on " + pp.src.Node.Name + ": " + why
		}
	}
	return "no reply in 3 tries across nodes; see the packet walk below and " + pp.src.Node.LogFile
}

func (c *checker) matrix(rows, cols []string, cell map[string]string) {
	if len(rows) == 0 || len(cols) == 0 {
		fmt.Fprintln(c.out, "  (nothing to test)")
		return
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprint(w, "  FROM \\ TO")
	for _, col := range cols {
		fmt.Fprint(w, "\t"+col)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		fmt.Fprint(w, "  "+r)
		for _, col := range cols {
			v, ok := cell[r+"|"+col]
			if !ok {
				v = "-"
			}
			fmt.Fprint(w, "\t"+v)
		}
		fmt.Fprintln(w)
	}
	_ = w.Flush()
}

// reachable pings dst from ns for up to two seconds: the first packet of
// a pair may wait for neighbour resolution on a busy machine.
func reachable(ctx context.Context, ns string, dst netip.Addr) bool {
	return testbed.PingWithin(ctx, ns, dst, 56, false, 2*time.Second) == nil
}

// ping sends one echo request of size payload bytes; df forbids
// fragmentation anywhere on the path.
func ping(ctx context.Context, ns string, dst netip.Addr, size int, df bool) error {
	return testbed.Ping(ctx, ns, dst, size, df)
}

// pingOut is ping that also returns what ping printed.
func pingOut(ctx context.Context, ns string, dst netip.Addr, size int, df bool) ([]byte, error) {
	return testbed.PingOutput(ctx, ns, dst, size, df)
}

func (c *checker) summary() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintln(c.out)
	if len(c.failures) == 0 {
		fmt.Fprintf(c.out, "lab %s: all %d checks passed\n", c.spec.Name, c.passed)
		return nil
	}
	fmt.Fprintf(c.out, "lab %s: %d of %d checks FAILED:\n", c.spec.Name, len(c.failures), len(c.failures)+c.passed)
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  FAILED\tWHY")
	for _, g := range groupFailures(c.failures) {
		fmt.Fprintf(w, "  %s\t%s\n", g.what, strings.ReplaceAll(g.why, "\n", " "))
	}
	_ = w.Flush()
	return ErrCheckFailed
}

// groupFailures merges failures with the same reason into one line, so a
// lab-wide problem (an MTU mismatch on every pair) reads as one.
func groupFailures(fs []failure) []failure {
	var order []string
	whats := map[string][]string{}
	for _, f := range fs {
		if _, ok := whats[f.why]; !ok {
			order = append(order, f.why)
		}
		whats[f.why] = append(whats[f.why], f.what)
	}
	out := make([]failure, 0, len(order))
	for _, why := range order {
		w := whats[why]
		what := strings.Join(w[:min(3, len(w))], ", ")
		if len(w) > 3 {
			what += fmt.Sprintf(" and %d more", len(w)-3)
		}
		out = append(out, failure{what: what, why: why})
	}
	return out
}
