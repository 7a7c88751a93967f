// Package policy wires flanneld's pod filtering: NetworkPolicy
// enforcement (internal/netpol) and anti-spoofing (internal/antispoof), or
// the removal of their tables when they are off. The daemon's main only
// parses the flags that turn them on.
package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/droplog"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/netpol"
	"github.com/flannelgo/flannel/internal/subnet"
	kubemgr "github.com/flannelgo/flannel/internal/subnet/kube"
)

// bridgeSysctls make bridged packets (pod to pod on one node, across cni0)
// pass the inet forward hook where the policy table sits.
var bridgeSysctls = []string{
	"/proc/sys/net/bridge/bridge-nf-call-iptables",
	"/proc/sys/net/bridge/bridge-nf-call-ip6tables",
}

// NetworkPolicy starts enforcing NetworkPolicies when on (--network-policy).
// Off, a table an earlier run left is removed: turning the flag off must
// not leave pods isolated by rules nobody updates. The drop log it returns
// (nil when off) records anti-spoofing drops too. selected, when set, is
// told before each rule update which pods a policy selects (the eBPF fast
// path sends those to the kernel path, where the rules see them).
func NetworkPolicy(ctx context.Context, on bool, dl DropLogOptions, mgr subnet.Manager, m *metrics.Metrics, selected SelectedPods) (*droplog.Log, error) {
	tbl, err := netpol.NewTable()
	if !on {
		if err != nil {
			klog.V(2).Infof("no nftables, so no network policy table to remove: %v", err)
			return nil, nil
		}
		return nil, removeLeftover(ctx, "--network-policy is off", "inet "+netpol.TableName, tbl.Remove)
	}
	if err != nil {
		return nil, err
	}
	km, ok := mgr.(*kubemgr.Manager)
	if !ok {
		return nil, errors.New("--network-policy needs --kube-subnet-mgr")
	}
	if err := enableBridgeNetfilter(); err != nil {
		return nil, err
	}
	met := netpol.NewMetrics(tbl)
	if err := m.Register(met.Collectors()...); err != nil {
		return nil, err
	}
	rules, log, err := dropLog(ctx, dl, tbl, m, km.NodeName)
	if err != nil {
		return nil, err
	}
	if selected != nil {
		rules = tellSelected{Rules: rules, to: selected}
	}
	ctl, err := netpol.NewController(netpol.ControllerOptions{RestConfig: km.RestConfig(), NodeName: km.NodeName, Metrics: met}, rules)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := ctl.Run(ctx); err != nil {
			klog.Errorf("network policy controller stopped: %v", err)
		}
	}()
	return log, nil
}

// SelectedPods is told which of the node's pods a policy selects.
type SelectedPods interface{ Set(addrs []netip.Addr) }

// tellSelected passes each compiled model on, first telling which pods it
// selects, so that a pod newly selected leaves the fast path no later
// than its rules load.
type tellSelected struct {
	netpol.Rules
	to SelectedPods
}

func (t tellSelected) Sync(ctx context.Context, m *netpol.Model) error {
	t.to.Set(m.Selected())
	return t.Rules.Sync(ctx, m)
}

// enableBridgeNetfilter turns the sysctls on unless they are on already
// (in a container /proc/sys is usually read-only, and the node's set-up,
// as kubeadm's, has set them).
func enableBridgeNetfilter() error {
	for _, path := range bridgeSysctls {
		cur, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--network-policy: %s is missing, so traffic between pods of this node would bypass the policy rules: load the br_netfilter module (modprobe br_netfilter)", path)
		}
		if err == nil && strings.TrimSpace(string(cur)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("--network-policy: %s is not 1 and setting it failed (%w): run sysctl -w %s=1 on the node, or traffic between pods of this node bypasses the policy rules",
				path, err, strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", "."))
		}
	}
	return nil
}
