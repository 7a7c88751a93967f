// Command flanneld is the flannel node daemon: it leases a subnet for this
// node, sets up the backend and keeps routes to every other node's subnet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/backend/alloc"
	"github.com/flannelgo/flannel/internal/backend/awsvpc"
	"github.com/flannelgo/flannel/internal/backend/extension"
	"github.com/flannelgo/flannel/internal/backend/hostgw"
	"github.com/flannelgo/flannel/internal/backend/ipip"
	"github.com/flannelgo/flannel/internal/backend/ipsec"
	"github.com/flannelgo/flannel/internal/backend/udp"
	"github.com/flannelgo/flannel/internal/backend/vxlan"
	"github.com/flannelgo/flannel/internal/backend/wireguard"
	"github.com/flannelgo/flannel/internal/daemon"
	"github.com/flannelgo/flannel/internal/daemon/policy"
	"github.com/flannelgo/flannel/internal/datapath/ebpf"
	"github.com/flannelgo/flannel/internal/iface"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/preflight"
	"github.com/flannelgo/flannel/internal/subnet"
	etcdmgr "github.com/flannelgo/flannel/internal/subnet/etcd"
	kubemgr "github.com/flannelgo/flannel/internal/subnet/kube"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// Caught from the first instruction: SIGTERM during start-up (a node
	// drained while flanneld waits for its datastore) is a clean stop, and
	// systemd must not mark the unit failed for it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	o, fs, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "flanneld: %v\n", err)
		return 2
	}
	if o.help {
		fs.SetOutput(os.Stdout)
		fs.PrintDefaults()
		return 0
	}
	if o.version {
		fmt.Println(version.Version)
		return 0
	}
	defer klog.Flush()
	for _, msg := range o.envIgnored {
		klog.Warning(msg)
	}
	if err := o.validate(); err != nil {
		klog.Errorf("%v", err)
		return 2
	}
	klog.Infof("flanneld %s starting", version.Version)
	err = serve(ctx, o)
	switch {
	case err != nil && ctx.Err() != nil:
		klog.Infof("stopped by a signal before start-up completed (%v)", err)
	case err != nil:
		klog.Errorf("%v", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, o *options) error {
	m := metrics.New()
	if err := serveHTTP(ctx, o, m); err != nil {
		return err
	}
	if o.debugPprofAddress != "" {
		if err := servePprof(ctx, o.debugPprofAddress); err != nil {
			return err
		}
	}
	mgr, closeMgr, err := subnetManager(o)
	if err != nil {
		return err
	}
	defer closeMgr()
	var selected *ebpf.Selected
	if o.networkPolicy {
		selected = ebpf.NewSelected()
	}
	drops, err := policy.NetworkPolicy(ctx, o.networkPolicy, o.dropLog.DropLogOptions, mgr, m, selectedPods(selected))
	if err != nil {
		return err
	}
	if err := policy.AntiSpoofing(ctx, o.antiSpoofing.value(o.networkPolicy), o.subnetFile, o.cniCacheDir, o.dropLog.DropLogOptions, drops, m); err != nil {
		return err
	}
	d := daemon.New(daemon.Options{
		Iface: iface.Options{
			Ifaces: o.iface, IfaceRegex: o.ifaceRegex, IfaceCanReach: o.ifaceCanReach,
			PublicIP: parseAddr(o.publicIP), PublicIPv6: parseAddr(o.publicIPv6),
		},
		SubnetFile: o.subnetFile, RenewMargin: o.renewMargin(),
		IPMasq: o.ipMasq, FullyRandomDisable: o.ipMasqFullyRandomDisable,
		ForwardRules: o.iptablesForwardRules, Resync: o.resync(), BlackholeRoute: o.ipBlackholeRoute,
		ReconcileInterval: o.reconcileInterval, SelfHealOff: o.reconcileInterval == 0,
		PeerProbeInterval: o.peerProbeInterval,
		Preflight:         preflight.Host{}.Check,
		CNICacheDir:       o.cniCacheDir, PolicySelected: selected,
	}, mgr, backends(), m)
	return d.Run(ctx)
}

// selectedPods keeps a nil set a nil interface: policy then tells no one.
func selectedPods(s *ebpf.Selected) policy.SelectedPods {
	if s == nil {
		return nil
	}
	return s
}

// subnetManager picks the datastore: the Kubernetes API with
// --kube-subnet-mgr, etcd otherwise.
func subnetManager(o *options) (subnet.Manager, func(), error) {
	if o.store.KubeSubnetMgr {
		ko := o.store.Kube()
		ko.NodeName, ko.PodName, ko.PodNamespace = os.Getenv("NODE_NAME"), os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
		ko.SetNodeNetworkUnavailable = o.setNodeNetworkUnavailable
		mgr, err := kubemgr.New(ko)
		if err != nil {
			return nil, nil, fmt.Errorf("kubernetes subnet manager: %w", err)
		}
		return mgr, func() {}, nil
	}
	opts := o.store.Etcd()
	prev := previousSubnets(o.subnetFile)
	opts.PreviousSubnet, opts.PreviousIPv6Subnet = prev.Subnet, prev.IPv6Subnet
	mgr, err := etcdmgr.New(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd subnet manager: %w", err)
	}
	return mgr, func() { _ = mgr.Close() }, nil
}

// previousSubnets reads what the last run wrote to subnet.env: a restarted
// node proves with it which lease is its own. A missing or broken file
// just means no proof.
func previousSubnets(path string) subnetenv.Env {
	env, err := subnetenv.Read(path)
	if err != nil {
		return subnetenv.Env{}
	}
	klog.V(1).Infof("%s from an earlier run names subnet %v %v", path, env.Subnet, env.IPv6Subnet)
	return *env
}

// backends lists the data planes this build supports.
func backends() backend.Registry {
	r := backend.Registry{vxlan.TypeName: vxlan.New, hostgw.TypeName: hostgw.New}
	r[alloc.TypeName] = alloc.New
	r[extension.TypeName] = extension.New
	r[ipip.TypeName] = ipip.New
	r[awsvpc.TypeName] = awsvpc.New
	r[ipsec.TypeName] = ipsec.New
	r[udp.TypeName] = udp.New
	r[wireguard.TypeName] = wireguard.New
	return r
}
