package policy

import (
	"context"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/droplog"
	"github.com/flannelgo/flannel/internal/metrics"
)

// AntiSpoofing pins every pod of this node to its own addresses when on
// (by default with --network-policy), reading the records the CNI plugin
// writes beside subnetFile and libcni's cache in cniCacheDir; its drops go
// to the drop log when one runs. Off, a table an earlier run left is
// removed, so no pod stays pinned to entries nobody updates.
func AntiSpoofing(ctx context.Context, on bool, subnetFile, cniCacheDir string, dl DropLogOptions, drops *droplog.Log, m *metrics.Metrics) error {
	tbl, err := antispoof.NewTable()
	if !on {
		if err != nil {
			klog.V(2).Infof("no nftables, so no anti-spoofing table to remove: %v", err)
			return nil
		}
		return removeLeftover(ctx, "anti-spoofing is off", "bridge "+antispoof.TableName, tbl.Remove)
	}
	if err != nil {
		return err
	}
	ctl := antispoof.NewController(antispoof.Options{
		RecordDir: antispoof.RecordDir(subnetFile), CNICacheDir: cniCacheDir,
	}, tbl)
	spoofDropLog(dl, drops, tbl, ctl)
	// The first sync before anything else: pods made while flanneld was
	// away are pinned before it reports ready.
	if err := ctl.Sync(ctx); err != nil {
		return err
	}
	if err := m.Register(antispoof.NewCollector(ctl)); err != nil {
		return err
	}
	klog.Infof("anti-spoofing: each pod on this node may send only from its own addresses and MAC (nftables table bridge %s; pod records in %s)",
		antispoof.TableName, antispoof.RecordDir(subnetFile))
	go func() {
		if err := ctl.Run(ctx); err != nil {
			klog.Errorf("anti-spoofing stopped: %v", err)
		}
	}()
	return nil
}

// removeLeftover deletes a table an earlier run left once its feature is
// off: nothing may go on filtering pods under rules nobody updates.
func removeLeftover(ctx context.Context, why, table string, remove func(context.Context) (bool, error)) error {
	removed, err := remove(ctx)
	if err != nil {
		return err
	}
	if removed {
		klog.Infof("%s: removed nftables table %s left by an earlier run", why, table)
	}
	return nil
}
