// Package daemon is flanneld's run loop: it wires the subnet manager, the
// backend, the traffic rules and subnet.env together. It is the only place
// that knows about all of them.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/datapath/ebpf"
	"github.com/flannelgo/flannel/internal/iface"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/leaseset"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/peerhealth"
	"github.com/flannelgo/flannel/internal/subnet"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/traffic"
)

// Options are the daemon's settings, taken from flanneld's flags.
type Options struct {
	Iface              iface.Options
	SubnetFile         string
	RenewMargin        time.Duration
	IPMasq             bool
	FullyRandomDisable bool
	ForwardRules       bool
	Resync             time.Duration
	BlackholeRoute     bool
	// ReconcileInterval is how often a self-healing backend compares the
	// kernel with the leases (0: backend.DefaultReconcileInterval).
	ReconcileInterval time.Duration
	// SelfHealOff leaves drift in the kernel alone (--reconcile-interval=0),
	// for an operator who inspects or changes the data path by hand.
	SelfHealOff bool
	// ProcSys is where the kernel's sysctls are read; "" means /proc/sys.
	ProcSys string
	// PeerProbeInterval is how often each peer is probed over the overlay
	// (internal/peerhealth); 0 turns probing off.
	PeerProbeInterval time.Duration
	// Preflight, when set, is asked before anything is set up whether
	// this host can run cfg's backend at all (a DaemonSet without
	// /dev/net/tun for udp, say); its error stops the start.
	Preflight func(cfg *config.Config) error
	// CNICacheDir is libcni's cache, where the eBPF fast path finds pods
	// the CNI plugin made before it wrote records.
	CNICacheDir string
	// PolicySelected, when set (--network-policy), names the pods the eBPF
	// fast path must leave to the kernel path.
	PolicySelected *ebpf.Selected
}

// Daemon runs one node's flannel network.
type Daemon struct {
	opts     Options
	mgr      subnet.Manager
	backends backend.Registry
	metrics  *metrics.Metrics
	ready    *readiness
	prober   *peerhealth.Prober // nil when --peer-probe-interval=0

	reassert chan int64 // revisions of foreign values at our own key
}

// New wires a daemon; nothing happens until Run.
func New(opts Options, mgr subnet.Manager, backends backend.Registry, m *metrics.Metrics) *Daemon {
	return &Daemon{opts: opts, mgr: mgr, backends: backends, metrics: m, ready: &readiness{m: m}, reassert: make(chan int64, 1)}
}

// Run sets the node up and then follows other nodes until ctx ends. On
// return the data path is left in place, so pods keep talking while the
// daemon restarts.
func (d *Daemon) Run(ctx context.Context) error {
	cfg, err := d.networkConfig(ctx)
	if err != nil {
		return err
	}
	if err := d.backends.Check(cfg.BackendType); err != nil {
		return err
	}
	if d.opts.Preflight != nil {
		if err := d.opts.Preflight(cfg); err != nil {
			return err
		}
	}
	opts := d.opts.Iface
	opts.EnableIPv4, opts.EnableIPv6 = cfg.EnableIPv4, cfg.EnableIPv6
	if err := d.applyStoredPublicIP(ctx, &opts); err != nil {
		return err
	}
	ext, err := iface.Select(opts)
	if err != nil {
		return fmt.Errorf("choose external interface: %w", err)
	}
	klog.Info(iface.LogLine(ext))

	be, err := d.backends.New(cfg.BackendType, ext, cfg.Backend)
	if err != nil {
		return fmt.Errorf("create %s backend: %w", cfg.BackendType, err)
	}
	d.resumeBackend(ctx, be, cfg.BackendType)
	nw, err := be.RegisterNetwork(ctx, cfg)
	if err != nil {
		return fmt.Errorf("register %s network: %w", cfg.BackendType, err)
	}
	if in, ok := nw.(backend.Instrumented); ok {
		if err := d.metrics.Register(in.Collectors()...); err != nil {
			klog.Errorf("%v", err)
		}
	}
	own, err := d.acquire(ctx, nw, ext)
	if err != nil {
		return err
	}
	if err := nw.Activate(ctx, own); err != nil {
		return fmt.Errorf("activate %s for %s: %w", cfg.BackendType, own.Key(), err)
	}
	if h, ok := nw.(backend.Healer); ok && !d.opts.SelfHealOff {
		go h.Heal(ctx, backend.HealConfig{Interval: d.opts.ReconcileInterval, Report: d.metrics})
	} else if ok {
		klog.Warning("self-healing is off (--reconcile-interval=0): kernel state changed by hand stays as it is until a lease changes")
	}
	if err := d.startRules(ctx, cfg, own); err != nil {
		return err
	}
	if err := d.startDatapath(ctx, cfg, own, ext); err != nil {
		return err
	}
	if d.opts.BlackholeRoute {
		if _, err := ensureBlackholeRoutes(own); err != nil {
			return err
		}
		go keepBlackholeRoutes(ctx, own, d.opts.Resync)
	}
	if err := d.writeSubnetFile(cfg, own, nw.MTU()); err != nil {
		return err
	}
	klog.Infof("wrote %s (subnet %s, MTU %d)", d.opts.SubnetFile, own.Key(), nw.MTU())

	peers := leaseset.New(cfg, own, guardHost(ctx))
	d.metrics.SetBuildInfo(cfg.BackendType)
	if cfg.EnableIPv4 {
		d.metrics.PoolCapacity.Set(float64(cfg.SubnetCount()))
	}
	go d.watchConfig(ctx, cfg)
	return d.follow(ctx, peers, nw, own)
}

// follow renews the own lease and follows other nodes' until ctx ends or
// the own lease is lost for good (another node took its subnet): then it
// returns that error, and flanneld exits non-zero so that its supervisor
// restarts it into a fresh subnet.
func (d *Daemon) follow(parent context.Context, peers *leaseset.Set, nw backend.Network, own *lease.Lease) error {
	ctx, stop := context.WithCancelCause(parent)
	defer stop(nil)
	renewNow := make(chan struct{}, 1)
	go d.renewLoop(ctx, own, renewNow, stop)
	d.prober = d.startProber(ctx, nw)
	d.followPeers(ctx, peers, nw, own, renewNow)
	d.shutdown()
	if err := context.Cause(ctx); errors.Is(err, subnet.ErrLeaseTaken) {
		return err
	}
	return nil
}

// networkConfig reads the network config, retrying datastore outages, and
// makes the start-up checks upstream makes on it.
func (d *Daemon) networkConfig(ctx context.Context) (*config.Config, error) {
	var cfg *config.Config
	err := retry(ctx, "read network config from "+d.mgr.Name(), d.metrics, func() error {
		var err error
		cfg, err = d.mgr.GetNetworkConfig(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	klog.Info(configLine(cfg))
	for _, w := range cfg.Warnings {
		klog.Warningf("network config in %s: %s", d.mgr.Name(), w)
	}
	if err := checkBrNetfilter(d.opts.ProcSys, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// configLine names only the families in use: a zero netip.Prefix prints as
// "invalid Prefix", which reads like an error.
func configLine(cfg *config.Config) string {
	s := "network config:"
	if cfg.EnableIPv4 {
		s += fmt.Sprintf(" Network=%v SubnetLen=%d", cfg.Network, cfg.SubnetLen)
	}
	if cfg.EnableIPv6 {
		s += fmt.Sprintf(" IPv6Network=%v IPv6SubnetLen=%d", cfg.IPv6Network, cfg.IPv6SubnetLen)
	}
	return s + " backend=" + cfg.BackendType
}

// acquire publishes this node with the backend's attributes. Running out
// of subnets is final; datastore outages are retried.
func (d *Daemon) acquire(ctx context.Context, nw backend.Network, ext *backend.ExternalInterface) (*lease.Lease, error) {
	attrs := nw.LeaseAttrs()
	attrs.PublicIP, attrs.PublicIPv6 = ext.ExtAddr, ext.ExtV6Addr
	var own *lease.Lease
	err := retry(ctx, "acquire subnet lease from "+d.mgr.Name(), d.metrics, func() error {
		var err error
		own, err = d.mgr.AcquireLease(ctx, &attrs)
		if errors.Is(err, subnet.ErrNoFreeSubnet) {
			return permanent{err}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	klog.Infof("acquired lease %s, expires %s", own, own.Expiration.Format(time.RFC3339))
	d.metrics.LeaseExpiry.Set(float64(own.Expiration.Unix()))
	return own, nil
}

func (d *Daemon) startRules(ctx context.Context, cfg *config.Config, own *lease.Lease) error {
	if err := traffic.RemoveOtherMode(ctx, cfg.EnableNFTables); err != nil {
		klog.Warningf("removing the masquerade/forward rules of the mode not in use: %v", err)
	}
	if !d.opts.IPMasq && !d.opts.ForwardRules {
		return nil
	}
	tc := traffic.Config{
		Masquerade: d.opts.IPMasq, FullyRandom: !d.opts.FullyRandomDisable, Forward: d.opts.ForwardRules,
	}
	if cfg.EnableIPv4 {
		tc.Network, tc.Subnet = cfg.Network, own.Subnet
	}
	if cfg.EnableIPv6 {
		tc.IPv6Network, tc.IPv6Subnet = cfg.IPv6Network, own.IPv6Subnet
	}
	newRules, kind := traffic.NewIPTables, "iptables"
	if cfg.EnableNFTables {
		newRules, kind = traffic.NewNFTables, "nftables"
	}
	rules, err := newRules(tc)
	if err != nil {
		return fmt.Errorf("set up %s rules: %w", kind, err)
	}
	if _, err := rules.Apply(ctx); err != nil {
		return fmt.Errorf("install %s masquerade/forward rules: %w", kind, err)
	}
	go rules.Run(ctx, d.opts.Resync)
	klog.Infof("%s rules installed (masquerade=%v, forward=%v), re-checked every %s", kind, d.opts.IPMasq, d.opts.ForwardRules, d.opts.Resync)
	return nil
}

func (d *Daemon) writeSubnetFile(cfg *config.Config, own *lease.Lease, mtu int) error {
	env := &subnetenv.Env{MTU: mtu, IPMasq: d.opts.IPMasq}
	if cfg.EnableIPv4 {
		env.Network, env.Subnet = cfg.Network, gateway(own.Subnet)
	}
	if cfg.EnableIPv6 {
		env.IPv6Network, env.IPv6Subnet = cfg.IPv6Network, gateway(own.IPv6Subnet)
	}
	return subnetenv.Write(d.opts.SubnetFile, env)
}

// gateway is the subnet's first host address with the subnet's length, the
// form upstream writes (10.244.1.1/24) and the CNI plugin expects.
func gateway(p netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(p.Addr().Next(), p.Bits())
}

// shutdown leaves routes, devices and the masquerade/forward rules (of
// either mode) in place on purpose: pods keep their connectivity, egress
// NAT included, while the daemon restarts.
func (d *Daemon) shutdown() {
	d.metrics.Fail(metrics.CondStopping, "flanneld is shutting down")
	notifySystemd("STOPPING=1")
	klog.Info("shutting down; routes, devices and traffic rules are left in place so pod traffic keeps flowing")
}

// guardHost is where the lease set's guard reads the node's own addresses and
// routes: kept from netlink notifications, or read in full for every
// lease batch when notifications cannot be followed.
func guardHost(ctx context.Context) leaseset.Host {
	w, err := leaseset.WatchHost(ctx, nil)
	if err != nil {
		klog.Warningf("lease guard: %v; reading the host's routes for every lease batch instead", err)
		return leaseset.NetlinkHost{}
	}
	return w
}
