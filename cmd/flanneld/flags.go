package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/iface"
	"github.com/flannelgo/flannel/internal/subnet/storeflags"
)

// options mirrors upstream flanneld's command line, name for name.
type options struct {
	store                                  storeflags.Flags // etcd and kube datastore flags
	iface, ifaceRegex                      stringSlice
	ifaceCanReach                          string
	publicIP, publicIPv6                   string
	subnetFile                             string
	subnetLeaseRenewMargin                 int
	ipMasq, ipMasqFullyRandomDisable       bool
	iptablesResync                         int
	iptablesForwardRules, ipBlackholeRoute bool
	healthzIP                              string
	healthzPort                            int
	version, help                          bool

	peerProbeInterval time.Duration

	setNodeNetworkUnavailable bool

	networkPolicy     bool
	antiSpoofing      autoBool
	cniCacheDir       string
	reconcileInterval time.Duration

	debugPprofAddress string
	metricsAddress    string
	dropLog           dropLogOptions

	// envIgnored holds one line per FLANNELD_* value that could not be
	// applied; run logs them once logging is set up.
	envIgnored []string
}

// autoBool is a flag that is true, false or auto (the default): it can
// be given alone (--anti-spoofing) like a bool.
type autoBool struct{ set, on bool }

func (b *autoBool) String() string {
	if b == nil || !b.set {
		return "auto"
	}
	return fmt.Sprint(b.on)
}

func (b *autoBool) Set(v string) error {
	if v == "auto" {
		*b = autoBool{}
		return nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q: want true, false or auto", v)
	}
	*b = autoBool{set: true, on: on}
	return nil
}

func (b *autoBool) IsBoolFlag() bool { return true }

// value is the flag's setting, with auto resolved to def.
func (b autoBool) value(def bool) bool {
	if b.set {
		return b.on
	}
	return def
}

// stringSlice is a repeatable flag (--iface=eth0 --iface=eth1).
type stringSlice []string

func (s *stringSlice) String() string { return strings.Join(*s, ",") }
func (s *stringSlice) Set(v string) error {
	*s = append(*s, v)
	return nil
}

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("flanneld", flag.ContinueOnError)
	o.store.Register(fs)
	fs.Var(&o.iface, "iface", "interface to use (IP or name) for inter-host communication; may be repeated, tried in order")
	fs.Var(&o.ifaceRegex, "iface-regex", "regex matching the first interface (IP or name) to use for inter-host communication; may be repeated")
	fs.StringVar(&o.ifaceCanReach, "iface-can-reach", "", "use the interface the kernel would use to reach this address")
	fs.StringVar(&o.publicIP, "public-ip", "", "IP accessible by other nodes for inter-host communication")
	fs.StringVar(&o.publicIPv6, "public-ipv6", "", "IPv6 accessible by other nodes for inter-host communication")
	fs.StringVar(&o.subnetFile, "subnet-file", "/run/flannel/subnet.env", "filename where env variables (subnet, MTU, ...) will be written to")
	fs.IntVar(&o.subnetLeaseRenewMargin, "subnet-lease-renew-margin", 60, "subnet lease renewal margin, in minutes, ranging from 1 to 1439")
	fs.BoolVar(&o.ipMasq, "ip-masq", false, "setup IP masquerade rule for traffic destined outside of overlay network")
	fs.BoolVar(&o.ipMasqFullyRandomDisable, "ip-masq-fully-random-disable", false, "do not use --random-fully in the masquerade rules")
	fs.IntVar(&o.iptablesResync, "iptables-resync", 5, "resync period for iptables rules, in seconds")
	fs.BoolVar(&o.iptablesForwardRules, "iptables-forward-rules", true, "add default accept rules to FORWARD chain in iptables")
	fs.BoolVar(&o.ipBlackholeRoute, "ip-blackhole-route", false, "add a blackhole route for this node's subnet, taking over when the pod bridge is gone")
	fs.StringVar(&o.healthzIP, "healthz-ip", "0.0.0.0", "the IP address for the healthz server to listen on")
	fs.IntVar(&o.healthzPort, "healthz-port", 0, "the port for the healthz server to listen on (0 to disable)")
	fs.BoolVar(&o.version, "version", false, "print version and exit")
	fs.BoolVar(&o.help, "help", false, "print this message")
	fs.BoolVar(&o.setNodeNetworkUnavailable, "set-node-network-unavailable", true, "set the node's NetworkUnavailable condition to false once ready")
	fs.BoolVar(&o.networkPolicy, "network-policy", false, "enforce Kubernetes NetworkPolicies for this node's pods with nftables (needs --kube-subnet-mgr)")
	fs.Var(&o.antiSpoofing, "anti-spoofing", "drop frames a pod sends from an address or MAC that is not its own (true, false, or auto: on with --network-policy, whose rules trust source addresses); not an upstream flag")
	fs.StringVar(&o.cniCacheDir, "cni-cache-dir", "/var/lib/cni", "libcni's cache directory on the node: with --anti-spoofing, pods added before flannel's CNI plugin kept records of their addresses (an upgrade, a migration from upstream) are pinned from it; not an upstream flag")
	fs.DurationVar(&o.reconcileInterval, "reconcile-interval", 30*time.Second, "how often the kernel's routes, neighbours, FDB entries and devices are compared with the leases and repaired (netlink events trigger repairs at once too); 0 turns self-healing off")
	fs.DurationVar(&o.peerProbeInterval, "peer-probe-interval", 10*time.Second, "how often each peer is probed over the overlay for the flannel_peers_* and flannel_peer_* metrics (jittered); 0 turns probing off")
	fs.StringVar(&o.debugPprofAddress, "debug-pprof-address", "", "serve Go runtime profiles (/debug/pprof/) on this host:port, e.g. 127.0.0.1:6060, for debugging memory and CPU; not an upstream flag; empty (the default) turns it off")
	fs.StringVar(&o.metricsAddress, "metrics-address", "", "serve /metrics (and the policy drop log, /policy/drops, and /healthz and /readyz) on this host:port, and not on the healthz server, which then answers /healthz and /readyz only; not an upstream flag; empty (the default): /metrics is served with /healthz")
	o.dropLog.addFlags(fs)
	klog.InitFlags(fs)
	return fs
}

// parseFlags parses the command line, then fills every flag not given there
// from FLANNELD_<FLAG> (upper case, '-' as '_'), as upstream does: an empty
// value is skipped (systemd EnvironmentFiles and manifests carry them), and
// an invalid one is recorded in envIgnored and skipped, so the flag keeps
// its default instead of flanneld refusing to start.
func parseFlags(args []string) (*options, *flag.FlagSet, error) {
	o := &options{}
	fs := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments %q: flanneld takes only flags", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		key := "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := os.Getenv(key)
		if v == "" {
			return
		}
		prev := f.Value.String()
		if err := fs.Set(f.Name, v); err != nil {
			// The flag package stores the zero value on a parse error
			// (--iptables-resync would become 0); put the default back.
			_ = f.Value.Set(prev)
			o.envIgnored = append(o.envIgnored, fmt.Sprintf("ignoring environment variable %s=%q: %v; --%s keeps %q (fix or unset the variable)",
				key, v, err, f.Name, prev))
		}
	})
	return o, fs, nil
}

// validate refuses flag values that would otherwise fail late or silently.
func (o *options) validate() error {
	if o.subnetLeaseRenewMargin < 1 || o.subnetLeaseRenewMargin > 1439 {
		return fmt.Errorf("--subnet-lease-renew-margin=%d: must be between 1 and 1439 minutes", o.subnetLeaseRenewMargin)
	}
	if o.networkPolicy && !o.store.KubeSubnetMgr {
		return errors.New("--network-policy needs --kube-subnet-mgr: NetworkPolicies, pods and namespaces are read from the Kubernetes API, which flanneld does not use with etcd")
	}
	if o.networkPolicy && !o.ipMasq {
		return errors.New("--network-policy needs --ip-masq (as deploy/kube-flannel.yml runs flanneld): without it the flannel CNI plugin has the bridge plugin masquerade pod traffic leaving the node, so other nodes see the node's address instead of the pod's and cannot tell which policy applies")
	}
	if o.peerProbeInterval < 0 {
		return fmt.Errorf("--peer-probe-interval=%s: must be 0 (off) or positive", o.peerProbeInterval)
	}
	if o.iptablesResync < 1 {
		return fmt.Errorf("--iptables-resync=%d: must be at least 1 second", o.iptablesResync)
	}
	if o.reconcileInterval != 0 && o.reconcileInterval < time.Second {
		return fmt.Errorf("--reconcile-interval=%s: must be 0 (self-healing off) or at least 1s", o.reconcileInterval)
	}
	for name, v := range map[string]string{"public-ip": o.publicIP, "public-ipv6": o.publicIPv6} {
		if v == "" {
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return fmt.Errorf("--%s=%q: not an IP address", name, v)
		}
		if (name == "public-ip") != a.Is4() {
			return fmt.Errorf("--%s=%q: wrong address family", name, v)
		}
		if err := iface.CheckPublicAddr(name, a); err != nil {
			return err
		}
	}
	return nil
}

func (o *options) renewMargin() time.Duration {
	return time.Duration(o.subnetLeaseRenewMargin) * time.Minute
}

func (o *options) resync() time.Duration { return time.Duration(o.iptablesResync) * time.Second }

// parseAddr turns an optional address flag into netip.Addr (invalid if empty;
// validate has already refused malformed values).
func parseAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}
