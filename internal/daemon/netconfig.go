package daemon

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/pace"
)

// configPollEvery is how often a running daemon compares the datastore's
// network config with the one it runs with.
const configPollEvery = 5 * time.Second

// watchConfig reports, instead of silently ignoring, a network config that
// changed under the running daemon: it takes effect only on restart, and
// until then leases of the new network are refused as outside the network.
func (d *Daemon) watchConfig(ctx context.Context, running *config.Config) {
	reported := ""
	pace.Every(ctx, configPollEvery, 0.1, func(ctx context.Context) bool {
		cur, err := d.mgr.GetNetworkConfig(ctx)
		if err != nil {
			klog.V(1).Infof("re-read network config: %v", err)
			return true
		}
		diff := configDiff(running, cur)
		if diff == "" {
			if reported != "" {
				klog.Infof("network config in %s matches the running one again", d.mgr.Name())
				d.metrics.ConfigMismatch.Set(0)
				d.metrics.Pass(metrics.CondConfig)
				reported = ""
			}
			return true
		}
		if diff != reported {
			reported = diff
			klog.Errorf("network config in %s changed under the running daemon: %s; it takes effect when flanneld restarts", d.mgr.Name(), diff)
			d.metrics.ConfigMismatch.Set(1)
			d.metrics.Fail(metrics.CondConfig, "network config changed: "+diff+"; restart flanneld to apply it")
		}
		return true
	})
}

// configDiff names what differs between the running and the current
// config, or "" when nothing that matters does.
func configDiff(run, cur *config.Config) string {
	switch {
	case run.Network != cur.Network || run.SubnetLen != cur.SubnetLen:
		return fmt.Sprintf("Network %s/SubnetLen %d is now %s/SubnetLen %d", run.Network, run.SubnetLen, cur.Network, cur.SubnetLen)
	case run.IPv6Network != cur.IPv6Network || run.IPv6SubnetLen != cur.IPv6SubnetLen:
		return fmt.Sprintf("IPv6Network %s/IPv6SubnetLen %d is now %s/IPv6SubnetLen %d", run.IPv6Network, run.IPv6SubnetLen, cur.IPv6Network, cur.IPv6SubnetLen)
	case run.BackendType != cur.BackendType || !sameJSON(run.Backend, cur.Backend):
		return fmt.Sprintf("Backend %s is now %s", cut(run.Backend), cut(cur.Backend))
	case run.SubnetMin != cur.SubnetMin || run.SubnetMax != cur.SubnetMax:
		return fmt.Sprintf("SubnetMin..SubnetMax %s..%s is now %s..%s", run.SubnetMin, run.SubnetMax, cur.SubnetMin, cur.SubnetMax)
	}
	return ""
}

// cut bounds raw JSON for a log line.
func cut(b []byte) string {
	const n = 200
	if len(b) > n {
		return fmt.Sprintf("%s...(%d bytes)", b[:n], len(b))
	}
	return string(b)
}
