package daemon

import (
	"context"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/peerhealth"
	"github.com/flannelgo/flannel/internal/probe"
)

// startProber starts per-peer health probing when PeerProbeInterval is set.
// The returned prober is fed the same lease events as the backend; nil
// means probing is off. Probing is a diagnostic: when it cannot start
// (no CAP_NET_RAW) the network still comes up, with an error in the log.
func (d *Daemon) startProber(ctx context.Context, nw backend.Network) *peerhealth.Prober {
	if d.opts.PeerProbeInterval <= 0 {
		return nil
	}
	pinger, err := probe.NewPinger()
	if err != nil {
		klog.Errorf("per-peer health probes are off: %v (give flanneld CAP_NET_RAW, or set --peer-probe-interval=0 to silence this)", err)
		return nil
	}
	go func() {
		<-ctx.Done()
		_ = pinger.Close()
	}()
	transport := ""
	if t, ok := nw.(backend.Transported); ok {
		transport = t.Transport()
	}
	pr := peerhealth.New(d.opts.PeerProbeInterval, pinger, peerhealth.NewMetrics(d.metrics.Registry()), transport)
	go pr.Run(ctx)
	klog.Infof("probing every peer over the overlay once per %s (flannel_peers_probed, flannel_peers_unreachable; per-peer series for peers with losses)", d.opts.PeerProbeInterval)
	return pr
}
