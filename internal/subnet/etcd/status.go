package etcd

import (
	"sync/atomic"

	"github.com/flannelgo/flannel/internal/subnet"
)

var _ subnet.WatchStatusReporter = (*Manager)(nil)

// watchStatus holds the function told about watch outages, if any.
type watchStatus struct{ fn atomic.Pointer[func(error)] }

func (w *watchStatus) report(err error) {
	if fn := w.fn.Load(); fn != nil {
		(*fn)(err)
	}
}

// ReportWatchStatus registers report, called with an error when the lease
// watch loses etcd (after the connection grace) and with nil once it has
// re-listed; see subnet.WatchStatusReporter.
func (m *Manager) ReportWatchStatus(report func(err error)) { m.status.fn.Store(&report) }
