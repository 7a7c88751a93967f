package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelgo/flannel/internal/harness/leasewatch"
	"github.com/flannelgo/flannel/internal/lease"
)

// watchRun is a WatchLeases call running in the background.
type watchRun struct {
	t      *testing.T
	events chan []lease.Event
	cancel context.CancelFunc
	done   chan error
}

func startWatch(t *testing.T, m *Manager) *watchRun {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	w := &watchRun{t: t, events: make(chan []lease.Event, 100), cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- m.WatchLeases(ctx, w.events) }()
	t.Cleanup(func() { w.stop() })
	return w
}

// stop cancels the watch and checks that it returns promptly.
func (w *watchRun) stop() {
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			w.t.Errorf("WatchLeases returned %v, want context.Canceled", err)
		}
		w.done <- err // keep stop idempotent
	case <-time.After(10 * time.Second):
		w.t.Error("WatchLeases did not return within 10s of cancellation")
	}
}

func (w *watchRun) batch(timeout time.Duration) []lease.Event {
	w.t.Helper()
	select {
	case b := <-w.events:
		return b
	case <-time.After(timeout):
		w.t.Fatalf("no events within %s", timeout)
		return nil
	}
}

// quiet checks that no events arrive for d.
func (w *watchRun) quiet(d time.Duration) {
	w.t.Helper()
	select {
	case b := <-w.events:
		w.t.Fatalf("unexpected events %s", leasewatch.Describe(b))
	case <-time.After(d):
	}
}

// collect reads events until it has seen n or timeout passes.
func (w *watchRun) collect(n int, timeout time.Duration) []lease.Event {
	w.t.Helper()
	var all []lease.Event
	deadline := time.After(timeout)
	for len(all) < n {
		select {
		case b := <-w.events:
			all = append(all, b...)
		case <-deadline:
			w.t.Fatalf("after %s got %d events %s, want %d", timeout, len(all), leasewatch.Describe(all), n)
		}
	}
	return all
}

// expectEvents checks the set of (type, key) pairs, ignoring order across
// batches.
func expectEvents(t *testing.T, got []lease.Event, want ...string) {
	t.Helper()
	have := map[string]int{}
	for _, e := range got {
		have[e.Type.String()+" "+e.Lease.Key()]++
	}
	for _, w := range want {
		if have[w] == 0 {
			t.Errorf("missing event %q in %s", w, leasewatch.Describe(got))
		}
		have[w]--
	}
	for k, n := range have {
		if n > 0 {
			t.Errorf("unexpected event %q in %s", k, leasewatch.Describe(got))
		}
	}
}

func TestWatchLeases(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	a := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.1", "ae:00:00:00:00:0a"))
	w := startWatch(t, s.manager(t, Options{}))

	first := w.batch(10 * time.Second)
	expectEvents(t, first, "added "+a.Key())
	if len(first) == 1 && (first[0].Lease.Attrs.PublicIP != a.Attrs.PublicIP || string(first[0].Lease.Attrs.BackendData) != string(a.Attrs.BackendData)) {
		t.Errorf("snapshot lease %+v, want %+v", first[0].Lease, a)
	}

	b := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:0b"))
	got := w.batch(10 * time.Second)
	expectEvents(t, got, "added "+b.Key())

	// Node b restarts with a new MAC: one Added with the new attributes.
	acquire(t, s.manager(t, Options{PreviousSubnet: b.Subnet}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:bb"))
	got = w.batch(10 * time.Second)
	expectEvents(t, got, "added "+b.Key())
	if !strings.Contains(string(got[0].Lease.Attrs.BackendData), "ae:00:00:00:00:bb") {
		t.Errorf("changed lease carries %s, want the new MAC", got[0].Lease.Attrs.BackendData)
	}

	// Keys that are not leases are skipped.
	s.put(subnetsPath+"not-a-subnet", "{}")
	s.put(subnetsPath+keyBesides(a, b), "not json")
	w.quiet(500 * time.Millisecond)

	if _, err := s.raw().Delete(testCtx(t), subnetsPath+b.Key()); err != nil {
		t.Fatal(err)
	}
	got = w.batch(10 * time.Second)
	// Named by its subnets: the daemon's lease guard gives the backend the
	// attributes it accepted.
	expectEvents(t, got, "removed "+b.Key())

	// A lease that is not renewed expires: Removed.
	c := acquire(t, s.manager(t, Options{LeaseTTL: 3 * time.Second}), vxlanAttrs("198.51.100.3", "ae:00:00:00:00:0c"))
	expectEvents(t, w.batch(10*time.Second), "added "+c.Key())
	start := time.Now()
	expectEvents(t, w.batch(15*time.Second), "removed "+c.Key())
	t.Logf("expired lease removed %s after it was created", time.Since(start).Round(100*time.Millisecond))
}

func TestWatchEmptySnapshot(t *testing.T) {
	s := startEtcd(t)
	w := startWatch(t, s.manager(t, Options{}))
	if b := w.batch(10 * time.Second); b == nil || len(b) != 0 {
		t.Fatalf("first batch = %v, want an empty, non-nil batch", b)
	}
	w.stop()
}

// hide moves etcd to another client port so that the managers under test
// lose it, runs change against it there, and brings it back on the usual
// port. Changes made meanwhile are invisible to the watch.
func (s *etcdServer) hide(t *testing.T, minDown time.Duration, change func(cli *clientv3.Client)) {
	t.Helper()
	start := time.Now()
	s.stop()
	port := freePort(t)
	s.start(port)
	cli := newRawClient(t, fmt.Sprintf("http://127.0.0.1:%d", port))
	change(cli)
	cli.Close()
	s.stop()
	time.Sleep(minDown - time.Since(start))
	s.start(s.clientPort)
}

// The watch comes back inside the connection grace, resumes at its old
// revision, finds it compacted and must re-list.
func TestWatchResyncsAfterCompaction(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	a := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.1", "ae:00:00:00:00:0a"))
	b := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:0b"))
	m := s.manager(t, Options{})
	m.connGrace = time.Minute
	w := startWatch(t, m)
	expectEvents(t, w.batch(10*time.Second), "added "+a.Key(), "added "+b.Key())

	var cKey string
	s.hide(t, 0, func(cli *clientv3.Client) {
		ctx := testCtx(t)
		if _, err := cli.Delete(ctx, subnetsPath+a.Key()); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, subnetsPath+b.Key(), `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:00:00:00:00:bb"}}`); err != nil {
			t.Fatal(err)
		}
		cKey = keyBesides(a, b)
		resp, err := cli.Put(ctx, subnetsPath+cKey, `{"PublicIP":"198.51.100.3","BackendType":"vxlan"}`)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
	})
	got := w.collect(3, 30*time.Second)
	expectEvents(t, got, "removed "+a.Key(), "added "+b.Key(), "added "+cKey)
	if got[0].Type != lease.Removed {
		t.Errorf("removals must come first: %s", leasewatch.Describe(got))
	}
	w.quiet(time.Second)

	// And it keeps following.
	d := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.4", "ae:00:00:00:00:0d"))
	expectEvents(t, w.batch(10*time.Second), "added "+d.Key())
}

// etcd is gone for ~10s (longer than the connection grace): the watch
// reports an outage, re-lists once etcd is back, and keeps following.
func TestWatchSurvivesOutage(t *testing.T) {
	t.Parallel() // mostly waits for the outage to pass
	s := startEtcd(t)
	s.put(configKey, netConf)
	a := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.1", "ae:00:00:00:00:0a"))
	keep := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:0b"))
	w := startWatch(t, s.manager(t, Options{}))
	expectEvents(t, w.batch(10*time.Second), "added "+a.Key(), "added "+keep.Key())

	start := time.Now()
	s.hide(t, 10*time.Second, func(cli *clientv3.Client) {
		if _, err := cli.Delete(testCtx(t), subnetsPath+a.Key()); err != nil {
			t.Fatal(err)
		}
	})
	expectEvents(t, w.collect(1, 30*time.Second), "removed "+a.Key())
	t.Logf("removal seen %s after the outage began", time.Since(start).Round(100*time.Millisecond))

	c := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.3", "ae:00:00:00:00:0c"))
	expectEvents(t, w.collect(1, 30*time.Second), "added "+c.Key())
	w.quiet(time.Second)
}

// etcd restarts quickly (inside the grace): the client resumes the watch and
// nothing is lost or repeated.
func TestWatchSurvivesQuickRestart(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	a := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.1", "ae:00:00:00:00:0a"))
	w := startWatch(t, s.manager(t, Options{}))
	expectEvents(t, w.batch(10*time.Second), "added "+a.Key())

	s.stop()
	s.start(s.clientPort)
	b := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:0b"))
	expectEvents(t, w.collect(1, 30*time.Second), "added "+b.Key())
	w.quiet(time.Second)
}

// keyBesides is a subnet key of the test network that none of leases
// holds: leases are allocated at random, and a fixed key would now and
// then land on one of them.
func keyBesides(leases ...*lease.Lease) string {
	for i := 250; ; i-- {
		k := fmt.Sprintf("10.244.%d.0-24", i)
		if !slices.ContainsFunc(leases, func(l *lease.Lease) bool { return l.Key() == k }) {
			return k
		}
	}
}
