package daemon

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/pace"
)

// permanent marks an error that retrying cannot fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// retry calls fn with exponential back-off until it succeeds, returns a
// permanent error, or ctx ends. The first failure is logged at level 0 and
// the recovery too; the attempts in between only at -v=1, so an outage is
// one line in the log, not one per second.
func retry(ctx context.Context, what string, m *metrics.Metrics, fn func() error) error {
	const maxWait = 10 * time.Second
	bo := pace.New(pace.Policy{Min: 500 * time.Millisecond, Max: maxWait})
	failed := false
	for {
		err := fn()
		if err == nil {
			if failed {
				klog.Infof("%s: succeeded after retrying", what)
			}
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		m.DatastoreFails.Inc()
		if !failed {
			klog.Errorf("%s: %v (retrying with back-off up to %s)", what, err, maxWait)
			failed = true
		} else {
			klog.V(1).Infof("%s: still failing: %v", what, err)
		}
		if err := bo.Sleep(ctx); err != nil {
			return err
		}
	}
}
