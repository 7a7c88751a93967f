package daemon

import (
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/metrics"
)

// readiness feeds the daemon's two readiness conditions: the network is in
// place once the first complete batch of leases is applied, and the lease
// watch fails while it is broken, with the reason, so a node never reports
// ready while it cannot follow peers. It logs the watch's transitions.
type readiness struct {
	m *metrics.Metrics
}

func (r *readiness) applied() { r.m.Pass(metrics.CondNetwork) }

func (r *readiness) deaf(why string) {
	if r.m.Fail(metrics.CondLeaseWatch, why) {
		klog.Warningf("not ready: %s", why)
	}
}

func (r *readiness) hearing() {
	if r.m.Pass(metrics.CondLeaseWatch) {
		klog.Infof("following other nodes' leases again")
	}
}
