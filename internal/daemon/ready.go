package daemon

import (
	"sync"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/metrics"
)

// readiness decides what /readyz says: ready once the first complete batch
// of leases is applied, and not while the lease watch is broken, with the
// reason, so a node never reports ready while it cannot follow peers.
type readiness struct {
	m         *metrics.Metrics
	mu        sync.Mutex
	isApplied bool
	deafWhy   string // non-empty while the node cannot follow peers
}

func (r *readiness) applied() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.isApplied = true
	r.publish()
}

func (r *readiness) deaf(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deafWhy == "" {
		klog.Warningf("not ready: %s", why)
	}
	r.deafWhy = why
	r.publish()
}

func (r *readiness) hearing() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deafWhy != "" && r.isApplied {
		klog.Infof("following other nodes' leases again; ready")
	}
	r.deafWhy = ""
	r.publish()
}

func (r *readiness) publish() {
	switch {
	case r.deafWhy != "":
		r.m.SetNotReady(r.deafWhy)
	case r.isApplied:
		r.m.SetReady(true)
	}
}
