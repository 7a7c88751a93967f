package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/kernelstate"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/testbed"
)

// Progress lines go from the lab process to `lab up` over a pipe:
// "P <text>" is shown, "E <text>" is part of the error, "READY" ends a
// successful start.
const (
	msgProgress = "P "
	msgError    = "E "
	msgReady    = "READY"
	// parallel bounds concurrent node and pod set-up: the machine may have
	// two cores and other work.
	parallel = 4
)

// reporter writes progress for `lab up` and the lab's log.
type reporter struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (r *reporter) say(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	klog.Info(msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	// `lab up` may be gone (interrupted); the lab carries on regardless.
	_, _ = fmt.Fprintf(r.w, "%s[%5.1fs] %s\n", msgProgress, time.Since(r.start).Seconds(), msg)
}

func (r *reporter) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, line := range strings.Split(err.Error(), "\n") {
		_, _ = fmt.Fprintf(r.w, "%s%s\n", msgError, line)
	}
}

// ready ends the conversation with `lab up`, which then exits.
func (r *reporter) ready() {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = fmt.Fprintln(r.w, msgReady)
	if c, ok := r.w.(io.Closer); ok {
		_ = c.Close()
	}
	r.w = io.Discard
}

// running is a lab while the lab process holds it.
type running struct {
	spec *Spec
	tb   *testbed.Testbed
	etcd *embed.Etcd
	rep  *reporter
	kube *kubeLab // Kubernetes mode only
}

// Serve is the lab process: it builds the lab described in stateDir's
// spec, reports progress to progress, then keeps etcd and the flanneld
// processes running until ctx ends (SIGTERM from `lab down`), and tears
// everything down. On a failed start it tears down too, keeping the logs.
func Serve(ctx context.Context, stateDir string, progress io.Writer) error {
	spec, err := ReadSpec(stateDir)
	if err != nil {
		return err
	}
	rep := &reporter{w: progress, start: time.Now()}
	r := &running{spec: spec, rep: rep}
	upCtx, cancel := context.WithTimeout(ctx, spec.Timeout)
	err = r.up(upCtx)
	timedOut := ctx.Err() == nil && errors.Is(upCtx.Err(), context.DeadlineExceeded)
	cancel()
	if err != nil {
		if timedOut {
			err = fmt.Errorf("lab %s not up within --timeout %s: %w", spec.Name, spec.Timeout, err)
		}
		rep.fail(err)
		klog.Errorf("lab %s: %v", spec.Name, err)
		return errors.Join(err, r.teardown(true))
	}
	rep.ready()
	klog.Infof("lab %s is up; waiting for `flannelctl lab down`", spec.Name)
	if r.kube == nil {
		go r.watchFlanneld(ctx)
	}
	<-ctx.Done()
	klog.Infof("lab %s: shutting down", spec.Name)
	return r.teardown(false)
}

func (r *running) up(ctx context.Context) error {
	s := r.spec
	tb, err := testbed.New(ctx, testbed.Options{
		Name: s.Name, Segments: s.Segments, UnderlayMTU: s.UnderlayMTU, IPv6: s.Kube != nil && s.Kube.DualStack,
		StateDir: s.StateDir, FlanneldPath: s.FlanneldPath, Recorder: record{s.StateDir},
	})
	if err != nil {
		return err
	}
	r.tb = tb
	tb.PodNetworker = &testbed.CNIPods{PluginDir: s.PluginDir, BinDir: s.CNIBinDir, PodMTU: s.PodMTU}
	segs := testbed.SegmentPrefix(1, false).String()
	if s.Segments == 2 {
		segs += " + " + testbed.SegmentPrefix(2, false).String() + " via router " + tb.Router.NS
	}
	r.rep.say("underlay: hub %s, %s, MTU %d", tb.Hub.NS, segs, s.UnderlayMTU)
	if s.Kube != nil {
		if err := r.addNodes(ctx); err != nil {
			return err
		}
		return r.upKube(ctx)
	}

	if r.etcd, err = startEtcd(ctx, tb); err != nil {
		return err
	}
	r.rep.say("etcd (embedded) serving at %s", tb.EtcdEndpoint())
	if err := tb.PutConfig(ctx, "", s.NetConf()); err != nil {
		return fmt.Errorf("write network config: %w", err)
	}
	r.rep.say("network config %s/config = %s", testbed.DefaultEtcdPrefix, s.NetConf())

	if err := r.addNodes(ctx); err != nil {
		return err
	}
	if err := r.startFlanneld(ctx); err != nil {
		return err
	}
	if err := r.addPods(ctx); err != nil {
		return err
	}
	return r.waitReady(ctx)
}

func (r *running) addNodes(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for range r.spec.Nodes {
		g.Go(func() error {
			n, err := r.tb.AddNode(gctx)
			if err == nil {
				r.rep.say("node %s: namespace %s, eth0 %s (segment %d)", n.Name, n.NS, n.Addr, n.Segment)
			}
			return err
		})
	}
	return g.Wait()
}

// flanneldArgs are kube-flannel's, less the kube subnet manager: --ip-masq
// makes flanneld masquerade traffic leaving the pod network, so the
// bridge plugin does not (FLANNEL_IPMASQ=true).
// healthzPort is where each node's flanneld serves /healthz, /readyz and
// /metrics inside its namespace (`flannelctl lab doctor` asks it).
const healthzPort = 10244

func flanneldArgs() []string {
	return []string{"--ip-masq", fmt.Sprintf("--healthz-port=%d", healthzPort)}
}

func (r *running) startFlanneld(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range r.tb.Nodes {
		g.Go(func() error {
			if err := r.tb.StartFlanneld(gctx, n, flanneldArgs()...); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(gctx, 2*time.Minute)
			defer cancel()
			env, err := r.tb.WaitSubnetFile(wctx, n)
			if err != nil {
				return r.explainFlanneld(n, err)
			}
			r.rep.say("node %s: flanneld pid %d, subnet %s, FLANNEL_MTU %d", n.Name, r.tb.Flanneld(n).Pid, env.Subnet.Masked(), env.MTU)
			return nil
		})
	}
	return g.Wait()
}

// explainFlanneld adds what the operator should do to the common failures.
func (r *running) explainFlanneld(n *testbed.Node, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "unknown backend type") {
		return fmt.Errorf("flanneld refused backend %q on node %s: this flanneld build does not support it; use --backend vxlan or a flanneld that registers %q:\n%w",
			r.spec.Backend, n.Name, r.spec.Backend, err)
	}
	return fmt.Errorf("flanneld on node %s did not come up (log %s): %w", n.Name, n.LogFile, err)
}

func (r *running) addPods(ctx context.Context) error {
	if r.spec.PodsPerNode == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, n := range r.tb.Nodes {
		g.Go(func() error {
			for range r.spec.PodsPerNode {
				p, err := r.tb.AddPod(gctx, n)
				if err != nil {
					return err
				}
				r.rep.say("pod %s on %s: %s (CNI: flannel -> bridge cni0 + host-local, portmap)", p.Name, n.Name, p.IP)
			}
			return nil
		})
	}
	return g.Wait()
}

// waitRoutes waits until every node has a route to every other node's
// subnet, so that `lab check` right after `lab up` tests a settled lab. A
// route that flanneld refuses to install, saying why in its log (host-gw
// across a router, say), is what the operator built: the lab comes up
// with a warning, and `lab check` shows the consequence.
func (r *running) waitRoutes(ctx context.Context) error {
	subnets := map[string]netip.Prefix{}
	for _, n := range r.tb.Nodes {
		env, err := subnetenv.Read(n.SubnetFile)
		if err != nil {
			return err
		}
		subnets[n.Name] = env.Subnet.Masked()
	}
	start := time.Now()
	for {
		missing, err := missingRoutes(r.tb.Nodes, subnets)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			r.rep.say("routes: every node has a route to every other node's subnet")
			return nil
		}
		if explained(missing) && time.Since(start) > 3*time.Second {
			for _, m := range missing {
				r.rep.say("WARNING: %s; flanneld on %s: %s", m, m.node.Name, m.complaint)
			}
			return nil
		}
		if err := ctxwait.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("routes still missing after a minute: %s; see the nodes' flanneld.log", joinMissing(missing))
		}
	}
}

// missingRoute is a node without a route to a peer's subnet, and what
// the node's flanneld logged about that subnet, if anything.
type missingRoute struct {
	node, peer *testbed.Node
	subnet     netip.Prefix
	complaint  string
}

func (m missingRoute) String() string {
	return fmt.Sprintf("%s has no route to %s (%s)", m.node.Name, m.subnet, m.peer.Name)
}

func explained(ms []missingRoute) bool {
	for _, m := range ms {
		if m.complaint == "" {
			return false
		}
	}
	return true
}

func joinMissing(ms []missingRoute) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.String())
	}
	return strings.Join(s, "; ")
}

func missingRoutes(nodes []*testbed.Node, subnets map[string]netip.Prefix) ([]missingRoute, error) {
	var missing []missingRoute
	for _, n := range nodes {
		have, err := routeDsts(n.NS)
		if err != nil {
			return nil, err
		}
		for _, m := range nodes {
			if m != n && !have[subnets[m.Name]] {
				missing = append(missing, missingRoute{node: n, peer: m, subnet: subnets[m.Name],
					complaint: flanneldComplaint(n, subnets[m.Name])})
			}
		}
	}
	return missing, nil
}

// flanneldComplaint returns the last error flanneld on n logged about
// subnet, without klog's header, or "".
func flanneldComplaint(n *testbed.Node, subnet netip.Prefix) string {
	data, err := os.ReadFile(n.LogFile)
	if err != nil || !subnet.IsValid() {
		return ""
	}
	lines := strings.Split(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if !strings.HasPrefix(l, "E") || !strings.Contains(l, subnet.String()) {
			continue
		}
		if j := strings.Index(l, "] "); j >= 0 {
			l = l[j+2:]
		}
		return l
	}
	return ""
}

func routeDsts(ns string) (map[netip.Prefix]bool, error) {
	out := map[netip.Prefix]bool{}
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		routes, err := k.Routes("", unix.AF_INET)
		for _, rt := range routes {
			if rt.Dst.IsValid() {
				out[rt.Dst] = true
			}
		}
		return err
	})
	return out, err
}

// watchFlanneld logs a flanneld that exits while the lab runs; `lab
// status` shows it too.
func (r *running) watchFlanneld(ctx context.Context) {
	for _, n := range r.tb.Nodes {
		p := r.tb.Flanneld(n)
		if p == nil {
			continue
		}
		go func() {
			select {
			case <-p.Done():
				if ctx.Err() == nil {
					klog.Errorf("lab %s: flanneld on %s (pid %d) exited: %v; see %s", r.spec.Name, n.Name, p.Pid, p.Wait(), n.LogFile)
				}
			case <-ctx.Done():
			}
		}()
	}
}

// teardown stops flanneld first (it may still talk to etcd), then etcd,
// then removes namespaces and state. After a failed start the logs stay
// for a post-mortem.
func (r *running) teardown(keepLogs bool) error {
	var errs []error
	if r.kube != nil {
		errs = append(errs, r.kube.teardown())
	}
	if r.tb != nil {
		var wg sync.WaitGroup
		for _, n := range r.tb.Nodes {
			wg.Go(func() {
				if err := r.tb.StopFlanneld(n); err != nil {
					klog.Errorf("%v", err)
				}
			})
		}
		wg.Wait()
	}
	if r.etcd != nil {
		r.etcd.Close()
	}
	if r.tb != nil {
		r.tb.Opts.KeepState = keepLogs
		errs = append(errs, r.tb.Close(context.Background()))
	}
	if !keepLogs {
		errs = append(errs, removeOwn(r.spec.StateDir))
	} else {
		// The logs stay for a post-mortem; what says the lab is up goes.
		for _, p := range []string{procPath(r.spec.StateDir), topologyPath(r.spec.StateDir), pidDir(r.spec.StateDir)} {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		klog.Errorf("lab %s: tear down: %v", r.spec.Name, err)
		return err
	}
	klog.Infof("lab %s: torn down", r.spec.Name)
	return nil
}

// removeOwn deletes the lab's own files and the state dir once empty.
func removeOwn(dir string) error {
	var errs []error
	for _, p := range ownEntries(dir) {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}
