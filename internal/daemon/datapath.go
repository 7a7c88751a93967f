package daemon

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/datapath/ebpf"
	"github.com/flannelgo/flannel/internal/lease"
)

// startDatapath starts the eBPF fast path when the config asks for it.
// Otherwise it removes what a killed earlier run may have left attached:
// switching back to the kernel path must leave no program behind.
func (d *Daemon) startDatapath(ctx context.Context, cfg *config.Config, own *lease.Lease, ext *backend.ExternalInterface) error {
	if cfg.Datapath != config.DatapathEBPF {
		n, err := ebpf.RemoveLeftovers()
		if err != nil {
			klog.Warningf("removing eBPF fast-path programs left by an earlier run: %v", err)
		}
		if n > 0 {
			klog.Infof("data path is the kernel's: removed %d eBPF fast-path filters left by an earlier run", n)
		}
		return nil
	}
	uplink, err := uplinkName(cfg, ext)
	if err != nil {
		return err
	}
	dp, err := ebpf.Start(ctx, ebpf.Options{
		Cluster: cfg.Network, Local: own.Subnet, Uplink: uplink,
		RecordDir: antispoof.RecordDir(d.opts.SubnetFile), CNICacheDir: d.opts.CNICacheDir,
		Policy: d.opts.PolicySelected,
		Heal:   backend.HealConfig{Interval: d.opts.ReconcileInterval, Report: d.metrics},
	})
	if err != nil {
		return err
	}
	if err := d.metrics.Register(ebpf.NewCollector(dp)); err != nil {
		klog.Errorf("%v", err)
	}
	return nil
}

// uplinkName is the device packets to other nodes' pods leave by: the
// external interface for host-gw, flannel.<VNI> for vxlan.
func uplinkName(cfg *config.Config, ext *backend.ExternalInterface) (string, error) {
	if cfg.BackendType != "vxlan" {
		return ext.Iface.Name, nil
	}
	o := struct{ VNI *int }{}
	if err := json.Unmarshal(cfg.Backend, &o); err != nil {
		return "", fmt.Errorf("vxlan backend config: %w", err)
	}
	vni := 1
	if o.VNI != nil {
		vni = *o.VNI
	}
	return fmt.Sprintf("flannel.%d", vni), nil
}
