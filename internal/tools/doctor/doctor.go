// Package doctor finds, on one node, the failure modes that flannel's
// troubleshooting pages make operators check by hand: flanneld down or not
// ready, subnet.env missing or out of date, a wrong backend device or MTU,
// a cni0 left with an old subnet, routes/neighbours/FDB entries that do not
// match the leases, a blocked VXLAN port, a path MTU too small, duplicate
// or unreachable public addresses, FORWARD DROP, missing masquerade, kube
// podCIDR and RBAC trouble, subnet exhaustion and the VXLAN checksum bug.
// Each check reads only; it returns what is wrong, the evidence, and the
// fix. It runs in the caller's network namespace (the node's).
package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/probe"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// Status is a check's verdict.
type Status string

const (
	OK      Status = "ok"
	Problem Status = "PROBLEM"
	// Warning is a pass with something to watch (subnets running out).
	Warning Status = "warning"
	// Skip is a check that could not run, because what it needs (the
	// datastore, subnet.env, peers) is missing: it proves nothing either
	// way and is not counted as a problem. The check whose data is missing
	// reports the problem.
	Skip Status = "SKIP"
)

// Result is one check's outcome.
type Result struct {
	Check    string   `json:"check"`
	Status   Status   `json:"status"`
	Summary  string   `json:"summary"`
	Evidence []string `json:"evidence,omitempty"`
	Fix      string   `json:"fix,omitempty"`
}

// Datastore is where the leases and the network config live (etcd, or the
// Kubernetes API).
type Datastore interface {
	Name() string
	Config(ctx context.Context) (*config.Config, error)
	Leases(ctx context.Context) ([]lease.Lease, error)
}

// Inputs say where to look.
type Inputs struct {
	Store      Datastore
	SubnetFile string
	// Healthz is flanneld's --healthz-ip:--healthz-port; "" checks only
	// that the process runs.
	Healthz string
	// Kube, when set, adds the Kubernetes checks.
	Kube *KubeCheck
	// ProbeTimeout bounds each reachability probe (default 1 s).
	ProbeTimeout time.Duration
	// Progress, when set, is given each result as soon as its check ends.
	Progress func(Result)
}

// facts is what the checks share, gathered once.
type facts struct {
	in      Inputs
	env     *subnetenv.Env
	envErr  error
	cfg     *config.Config
	cfgErr  error
	leases  []lease.Lease
	leasErr error // nil also when the config could not be read (cfgErr says why)
	own     *lease.Lease
	peers   []lease.Lease // leases of other nodes (IPv4)
	local   map[netip.Addr]string
	k       *kernelstate.Reader
	pinger  *probe.Pinger
	timeout time.Duration
}

// Run runs every check and returns the results in a stable order, giving
// each to in.Progress as it ends.
func Run(ctx context.Context, in Inputs) []Result {
	f := &facts{in: in, timeout: in.ProbeTimeout}
	if f.timeout == 0 {
		f.timeout = time.Second
	}
	report := func(r Result) Result {
		if in.Progress != nil {
			in.Progress(r)
		}
		return r
	}
	if res := f.gather(ctx); res != nil {
		return []Result{report(res[0])}
	}
	defer f.k.Close()
	if f.pinger != nil {
		defer f.pinger.Close()
	}
	checks := []func(context.Context) Result{
		f.checkFlanneld, f.checkDatastore, f.checkSubnetEnv, f.checkDevice, f.checkBridge,
		f.checkKernelState, f.checkPublicAddress, f.checkReachability, f.checkPathMTU,
		f.checkForward, f.checkMasquerade, f.checkExhaustion, f.checkChecksum, f.checkAntiSpoofing, f.checkDatapath,
	}
	out := make([]Result, 0, len(checks)+1)
	for _, c := range checks {
		out = append(out, report(c(ctx)))
	}
	if in.Kube != nil {
		out = append(out, report(in.Kube.check(ctx, f.cfg)))
	}
	return out
}

// gather reads subnet.env, the datastore and the kernel. It returns results
// only when nothing can be checked at all (no netlink in this namespace).
func (f *facts) gather(ctx context.Context) []Result {
	var err error
	if f.k, err = kernelstate.Open(""); err != nil {
		return []Result{{Check: "kernel", Status: Problem, Summary: "cannot read this namespace's network state",
			Evidence: []string{err.Error()}, Fix: "run flannelctl doctor as root on the node"}}
	}
	f.env, f.envErr = subnetenv.Read(f.in.SubnetFile)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if f.cfg, f.cfgErr = f.in.Store.Config(cctx); f.cfgErr == nil {
		f.leases, f.leasErr = f.in.Store.Leases(cctx)
	}
	addrs, _ := f.k.Addresses()
	f.local = map[netip.Addr]string{}
	for dev, ps := range addrs {
		for _, p := range ps {
			f.local[p.Addr()] = dev
		}
	}
	f.findOwn()
	f.pinger, _ = probe.NewPinger() // a nil pinger turns probe checks into problems
	return nil
}

// findOwn picks this node's lease: the one subnet.env names, else the one
// advertising an address of this node.
func (f *facts) findOwn() {
	for i, l := range f.leases {
		byEnv := f.env != nil && f.env.Subnet.IsValid() && l.Subnet == f.env.Subnet.Masked()
		if byEnv {
			f.own = &f.leases[i]
		}
	}
	if f.own == nil {
		for i, l := range f.leases {
			if _, ok := f.local[l.Attrs.PublicIP]; ok && l.Attrs.PublicIP.IsValid() {
				f.own = &f.leases[i]
			}
		}
	}
	for _, l := range f.leases {
		if (f.own == nil || l.Key() != f.own.Key()) && l.Subnet.IsValid() {
			f.peers = append(f.peers, l)
		}
	}
}

func ok(check, summary string, ev ...string) Result {
	return Result{Check: check, Status: OK, Summary: summary, Evidence: ev}
}

func problem(check, summary, fix string, ev ...string) Result {
	return Result{Check: check, Status: Problem, Summary: summary, Evidence: ev, Fix: fix}
}

// skip says why a check could not run; the check that lacks the data
// reports the problem itself.
func skip(check, why string, ev ...string) Result {
	return Result{Check: check, Status: Skip, Summary: "not run: " + why, Evidence: ev}
}

// leasesRead reports whether the leases were read (an empty list read from
// the datastore is data; a failed read is none).
func (f *facts) leasesRead() bool { return f.cfg != nil && f.leasErr == nil }

// peerName names a peer lease the way operators see it in etcd.
func peerName(l lease.Lease) string {
	return fmt.Sprintf("%s (PublicIP %s)", l.Key(), l.Attrs.PublicIP)
}

// Failed reports whether any result is a PROBLEM.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Problem {
			return true
		}
	}
	return false
}
