package etcd

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/pace"
)

// Watch tuning. The connection grace lets etcd restart (a rolling upgrade)
// without a full re-list on every node: the client resumes the watch by
// itself. A longer loss of the connection is an outage: we drop the watch and
// re-list once etcd is back, which also copes with a restored or replaced
// etcd.
const (
	defaultConnGrace = 5 * time.Second
	backoffMin       = 200 * time.Millisecond
	backoffMax       = 5 * time.Second
	stableWatch      = 30 * time.Second // a watch that lived this long resets the back-off
)

var errConnLost = errors.New("connection to etcd lost")

// A datastore reset (etcd restarted with an empty data dir, or restored
// from an older backup) shows as a revision lower than one already seen.
// The watch alone cannot notice it: the client resumes watching at a future
// revision of the new store and hears nothing. A cheap count-only read every
// probeEvery compares revisions. After a reset, other nodes' leases that
// are missing are kept (not reported removed) for removalHold, long enough
// for their running daemons to re-create them, so that pods do not lose
// their routes meanwhile; the node's own lease is reported removed at once
// so that the daemon re-creates it.
const (
	probeEvery         = 2 * time.Second
	defaultRemovalHold = 20 * time.Second
)

var (
	errRevisionBack = errors.New("etcd revision went backwards")
	errHoldOver     = errors.New("re-listing leases held since a datastore reset")
)

// WatchLeases follows <prefix>/subnets/ until ctx ends; see subnet.Manager.
// It returns ctx.Err(), or an error if the manager is closed.
func (m *Manager) WatchLeases(ctx context.Context, events chan<- []lease.Event) error {
	w := &watcher{m: m, out: events, first: true, seed: maphash.MakeSeed()}
	health := outage{
		down: func(err error) {
			klog.Errorf("etcd unreachable at %s: %v; retrying", m.endpoints(), err)
			m.status.report(fmt.Errorf("etcd unreachable at %s: %w", m.endpoints(), err))
		},
		up: func(d time.Duration) {
			klog.Infof("etcd at %s reachable again after %s; re-listed leases", m.endpoints(), d.Round(time.Second))
			m.status.report(nil)
		},
	}
	bo := watchBackoff()
	for {
		cli, err := m.client()
		if errors.Is(err, errClosed) {
			return err
		}
		var rev int64
		if err == nil {
			rev, err = w.resync(ctx, cli)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			health.fail(err)
			if bo.Sleep(ctx) != nil {
				return ctx.Err()
			}
			continue
		}
		health.ok()
		started := time.Now()
		err = w.follow(ctx, cli, rev)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, errConnLost):
			health.fail(err)
		case errors.Is(err, errRevisionBack), errors.Is(err, errHoldOver):
			klog.Infof("%v; re-listing %s", err, m.subnetsPrefix())
		case errors.Is(err, rpctypes.ErrCompacted):
			klog.Infof("watch of %s fell behind an etcd compaction; re-listing", m.subnetsPrefix())
		default:
			klog.Infof("watch of %s interrupted: %v; re-listing", m.subnetsPrefix(), err)
		}
		bo.Settled(time.Since(started))
		if bo.Sleep(ctx) != nil {
			return ctx.Err()
		}
	}
}

// watcher remembers what the receiver has been told, so that after a gap it
// can send only the difference.
type watcher struct {
	m     *Manager
	out   chan<- []lease.Event
	known knownLeases
	seed  maphash.Seed
	first bool

	mu  sync.Mutex // guards rev, which the probe reads
	rev int64      // highest revision seen in this store

	holdUntil time.Time       // after a reset: keep missing leases until then
	held      map[string]bool // leases kept although missing from the store
}

// resync lists all leases and sends the full set the first time, the
// difference to what was sent before afterwards.
func (w *watcher) resync(ctx context.Context, cli *clientv3.Client) (int64, error) {
	rev, recs, err := w.m.list(ctx, cli)
	if err != nil {
		return 0, err
	}
	cur := make(map[string]lease.Lease, len(recs))
	for _, r := range recs {
		cur[r.name] = r.l
	}
	w.mu.Lock()
	last := w.rev
	w.rev = rev
	w.mu.Unlock()
	if rev < last {
		w.holdUntil = time.Now().Add(w.m.removalHold)
		klog.Warningf("etcd at %s is back at revision %d, below the %d seen before: its data was lost or restored; keeping the routes of the %d known leases for up to %s while their nodes re-create them",
			w.m.endpoints(), rev, last, len(w.known), w.m.removalHold)
	}
	w.hold(cur)
	next := make(knownLeases, len(cur))
	for name, l := range cur {
		if w.held[name] {
			next[name] = w.known[name] // kept as it was: cur has its subnets only
		} else {
			next[name] = l.Attrs.Digest(w.seed)
		}
	}
	batch := diff(w.known, next, cur)
	w.known = next
	if len(batch) > 0 || w.first {
		w.first = false
		if batch == nil {
			batch = []lease.Event{}
		}
		return rev, w.send(ctx, batch)
	}
	return rev, nil
}

// hold copies into cur the known leases that are missing from it while a
// reset's grace lasts, except the node's own.
func (w *watcher) hold(cur map[string]lease.Lease) {
	w.held = nil
	if time.Now().After(w.holdUntil) {
		return
	}
	for name := range w.known {
		if _, ok := cur[name]; !ok && !w.m.isOwn(name) {
			cur[name] = subnetsOf(name)
			if w.held == nil {
				w.held = map[string]bool{}
			}
			w.held[name] = true
		}
	}
}

// diff turns the change from the old known leases to next (the current
// leases cur, digested) into events, removals before additions: when a key
// changes shape (IPv4-only to dual stack) the receiver must drop the old
// route before adding the new.
func diff(old, next knownLeases, cur map[string]lease.Lease) []lease.Event {
	var removed, added []lease.Event
	for _, name := range sortedKeys(old) {
		if _, ok := next[name]; !ok {
			removed = append(removed, lease.Event{Type: lease.Removed, Lease: subnetsOf(name)})
		}
	}
	for _, name := range sortedKeys(next) {
		if d, ok := old[name]; !ok || d != next[name] {
			added = append(added, lease.Event{Type: lease.Added, Lease: cur[name]})
		}
	}
	return append(removed, added...)
}

// knownLeases is what the receiver was told, by key below
// <prefix>/subnets/: a digest of the attributes, enough to tell a change,
// since the subnets are in the key. A removal names the lease by its
// subnets, as subnet.Manager allows; the daemon's lease set holds the
// attributes and hands them to the backend. A second copy of them here
// would cost 2.8 MB at 10000 peers.
type knownLeases map[string]uint64

// subnetsOf is the lease named name, without attributes. Names are stored
// only after ParseBoundedKey accepted them (decode), so they parse again.
func subnetsOf(name string) lease.Lease {
	v4, v6, _ := lease.ParseKey(name)
	return lease.Lease{Subnet: v4, IPv6Subnet: v6}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (w *watcher) send(ctx context.Context, batch []lease.Event) error {
	select {
	case w.out <- batch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// follow streams changes after rev until the watch breaks. It returns why.
func (w *watcher) follow(ctx context.Context, cli *clientv3.Client, rev int64) error {
	// Without a leader etcd cannot serve fresh data: have it cancel the watch
	// so that we notice and re-list.
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	defer cancel(nil)
	go func() {
		if err := connLost(wctx, cli.ActiveConnection(), w.m.connGrace); err != nil {
			cancel(err)
		}
	}()
	prefix := w.m.subnetsPrefix()
	// Removed events are built from what the receiver was sent, so the watch
	// needs no previous values (WithPrevKV would double its traffic).
	var due time.Time // when held leases must be re-checked
	if len(w.held) > 0 {
		due = w.holdUntil
	}
	go w.probe(wctx, cli, cancel, due)
	for resp := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		w.seen(resp.Header.Revision)
		if batch := w.apply(resp.Events); len(batch) > 0 {
			if err := w.send(ctx, batch); err != nil {
				return err
			}
		}
	}
	if err := context.Cause(wctx); err != nil {
		return err
	}
	return errors.New("etcd client closed the watch")
}

// seen records a revision the store has reached.
func (w *watcher) seen(rev int64) {
	w.mu.Lock()
	w.rev = max(w.rev, rev)
	w.mu.Unlock()
}

// probe cancels the watch with errRevisionBack when the store's revision
// falls below one seen, and with errHoldOver once leases held since a reset
// are due to be re-checked. A failed read is left to connLost.
func (w *watcher) probe(ctx context.Context, cli *clientv3.Client, cancel context.CancelCauseFunc, due time.Time) {
	pace.Every(ctx, probeEvery, 0.1, func(ctx context.Context) bool {
		if !due.IsZero() && time.Now().After(due) {
			cancel(errHoldOver)
			return false
		}
		rctx, rcancel := context.WithTimeout(ctx, requestTimeout)
		resp, err := cli.Get(rctx, w.m.subnetsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		rcancel()
		if err != nil {
			return true
		}
		w.mu.Lock()
		last := w.rev
		w.mu.Unlock()
		if resp.Header.Revision < last {
			cancel(fmt.Errorf("%w (from %d to %d)", errRevisionBack, last, resp.Header.Revision))
			return false
		}
		w.seen(resp.Header.Revision)
		return true
	})
}

// apply folds watch events into known and returns what the receiver must
// hear; puts that do not change attributes (a renewal re-creating its key)
// are not news.
func (w *watcher) apply(evs []*clientv3.Event) []lease.Event {
	var batch []lease.Event
	exp := time.Now().Add(w.m.opts.LeaseTTL)
	for _, ev := range evs {
		name := strings.TrimPrefix(string(ev.Kv.Key), w.m.subnetsPrefix())
		old, had := w.known[name]
		if ev.Type == mvccpb.PUT {
			if r, ok := w.m.decode(ev.Kv, exp); ok {
				d := r.l.Attrs.Digest(w.seed)
				w.known[name] = d
				if !had || old != d {
					batch = append(batch, lease.Event{Type: lease.Added, Lease: r.l})
				}
				continue
			}
		}
		// A delete, an expiry, or a value overwritten with garbage: the
		// lease is gone as far as the receiver is concerned.
		if had {
			batch = append(batch, lease.Event{Type: lease.Removed, Lease: subnetsOf(name)})
			delete(w.known, name)
		}
	}
	return batch
}

// connLost returns an error once conn has been out of READY for longer than
// grace, and nil when ctx ends first. The clientv3 watch would otherwise
// retry silently forever.
func connLost(ctx context.Context, conn *grpc.ClientConn, grace time.Duration) error {
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			if !conn.WaitForStateChange(ctx, s) {
				return nil
			}
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, grace)
		for s != connectivity.Ready && conn.WaitForStateChange(tctx, s) {
			s = conn.GetState()
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if s != connectivity.Ready {
			return fmt.Errorf("%w (gRPC state %s for over %s)", errConnLost, s, grace)
		}
	}
}

// outage reports an outage once when it starts and once when it ends, not
// at every retry.
type outage struct {
	down  func(error)
	up    func(time.Duration)
	since time.Time
}

func (o *outage) fail(err error) {
	if o.since.IsZero() {
		o.since = time.Now()
		o.down(err)
	}
}

func (o *outage) ok() {
	if !o.since.IsZero() {
		o.up(time.Since(o.since))
		o.since = time.Time{}
	}
}

// watchBackoff paces re-lists after a failure, with jitter so that nodes
// do not return to a recovering etcd in lockstep.
func watchBackoff() *pace.Backoff {
	return pace.New(pace.Policy{Min: backoffMin, Max: backoffMax, Jitter: 0.2, Stable: stableWatch})
}
