package daemon

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/metrics"
)

// breakingManager's WatchLeases sends the scripted snapshot for each call
// and then fails with the scripted error, breaking the WatchLeases
// contract the way a buggy or closed manager would.
type breakingManager struct {
	fakeManager
	mu        sync.Mutex
	snapshots [][]lease.Event
	fail      chan error // each value ends the current call
	calls     int
	report    func(error)
}

func (b *breakingManager) WatchLeases(ctx context.Context, out chan<- []lease.Event) error {
	b.mu.Lock()
	snap := b.snapshots[min(b.calls, len(b.snapshots)-1)]
	b.calls++
	b.mu.Unlock()
	select {
	case out <- snap:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-b.fail:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *breakingManager) ReportWatchStatus(fn func(error)) { b.report = fn }

func (b *breakingManager) callCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// A watch that ends with an error makes the node not ready, with the
// reason, until the re-established watch's snapshot is applied; a peer
// missing from that snapshot is removed from the backend, with the
// attributes the backend was given, and the own lease missing from it is
// re-created.
func TestWatchErrorIsReestablished(t *testing.T) {
	own := mkLease("10.244.1.0/24", "198.51.100.11")
	p2 := mkLease("10.244.2.0/24", "198.51.100.12")
	p3 := mkLease("10.244.3.0/24", "198.51.100.13")
	add := func(ls ...*lease.Lease) []lease.Event {
		var evs []lease.Event
		for _, l := range ls {
			evs = append(evs, lease.Event{Type: lease.Added, Lease: *l})
		}
		return evs
	}
	mgr := &breakingManager{snapshots: [][]lease.Event{add(own, p2, p3), add(p2)}, fail: make(chan error)}
	m := metrics.New()
	d := New(Options{}, mgr, nil, m)
	nw := &fakeNetwork{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	renewNow := make(chan struct{}, 1)
	go d.followPeers(ctx, newPeers(t, own), nw, own, renewNow)
	waitFor(t, "ready after the first snapshot", m.IsReady)

	mgr.fail <- errors.New("etcd: mvcc: required revision has been compacted")
	waitFor(t, "not ready after the watch broke", func() bool { return !m.IsReady() })
	// The back-off before the second call leaves time to read the reason.
	if r := m.NotReadyReason(); !strings.Contains(r, "lease watch on fake ended") || !strings.Contains(r, "compacted") {
		t.Errorf("not-ready reason %q lacks the watch and its error", r)
	}
	waitFor(t, "watch re-established", func() bool { return mgr.callCount() == 2 })
	waitFor(t, "ready again", m.IsReady)
	waitFor(t, "second snapshot applied", func() bool { return len(nw.batches()) == 2 })
	var removed, added []string
	for _, ev := range nw.batches()[1] {
		if ev.Type == lease.Removed {
			if ev.Lease.Attrs.PublicIP != p3.Attrs.PublicIP || ev.Lease.Attrs.BackendType != p3.Attrs.BackendType {
				t.Errorf("removal of %s carries %+v, want the attributes the backend was given", p3.Key(), ev.Lease.Attrs)
			}
			removed = append(removed, ev.Lease.Key())
		} else {
			added = append(added, ev.Lease.Key())
		}
	}
	if strings.Join(removed, ",") != p3.Key() || strings.Join(added, ",") != p2.Key() {
		t.Errorf("after re-listing: removed %v added %v, want removed [%s] added [%s]", removed, added, p3.Key(), p2.Key())
	}
	if v := gauge(t, m.Peers); v != 1 {
		t.Errorf("flannel_peers = %v, want 1", v)
	}
	select {
	case <-renewNow:
	default:
		t.Error("the own lease, missing from the new snapshot, was not re-created")
	}

	// A manager that rides out outages itself reports them instead.
	mgr.report(errors.New("connection refused"))
	if m.IsReady() || !strings.Contains(m.NotReadyReason(), "connection refused") {
		t.Errorf("during a reported outage: ready=%v reason %q", m.IsReady(), m.NotReadyReason())
	}
	mgr.report(nil)
	if !m.IsReady() {
		t.Error("not ready after the manager reported it follows again")
	}
}

// Before the first batch, a manager's "following" report must not make the
// node ready: it has programmed nothing yet.
func TestNotReadyBeforeFirstBatch(t *testing.T) {
	d := New(Options{}, &fakeManager{}, nil, metrics.New())
	d.watchStatus(nil)
	if d.metrics.IsReady() {
		t.Fatal("ready before any lease was applied")
	}
	d.watchStatus(errors.New("x"))
	d.ready.applied()
	if d.metrics.IsReady() {
		t.Fatal("ready while deaf")
	}
}
