package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/pace"
	"github.com/flannelgo/flannel/internal/subnet"
)

// followPeers feeds other nodes' lease events to the backend until ctx
// ends. The node becomes ready once the first (complete) batch is applied,
// and is not ready while the lease watch is broken.
func (d *Daemon) followPeers(ctx context.Context, nw backend.Network, own *lease.Lease, renewNow chan<- struct{}) {
	if _, ok := nw.(backend.PeerIndifferent); ok {
		d.readyWithoutPeers(ctx)
		return
	}
	batches := make(chan watchBatch)
	if r, ok := d.mgr.(subnet.WatchStatusReporter); ok {
		r.ReportWatchStatus(d.watchStatus)
	}
	go d.watch(ctx, batches)
	known := map[string]struct{}{} // keys of every lease the watch reported, own included
	peers := map[string]struct{}{} // keys of the leases the backend programs, without a guard
	twins := map[string]bool{}     // leases already reported for sharing our address
	first := true
	for {
		var b watchBatch
		select {
		case <-ctx.Done():
			return
		case b = <-batches:
		}
		batch := b.events
		if b.snapshot && !first {
			batch = resnapshot(known, batch)
		}
		others := d.screen(d.otherNodes(batch, own, renewNow), own, twins)
		for _, ev := range others {
			d.metrics.LeaseEvents.WithLabelValues(ev.Type.String()).Inc()
		}
		trackKeys(known, batch)
		if d.guard == nil {
			trackKeys(peers, others)
		}
		start := time.Now()
		nw.HandleEvents(ctx, others)
		if d.prober != nil {
			d.prober.Update(others)
		}
		klog.V(2).Infof("applied %d lease events in %s", len(others), time.Since(start))
		if len(others) > 0 {
			d.metrics.LeaseApply.Observe(time.Since(b.arrived).Seconds())
		}
		d.metrics.Peers.Set(float64(d.peerCount(peers)))
		d.metrics.PoolUsed.Set(float64(len(known)))
		if b.snapshot {
			d.ready.hearing()
		}
		switch {
		case first:
			first = false
			d.ready.applied()
			klog.Infof("ready: %d peers programmed", d.peerCount(peers))
			go d.announceReady(ctx)
			notifySystemd("READY=1")
			tightenGC()
			releaseMemory()
		case len(others) >= bigBatch:
			releaseMemory()
		}
	}
}

// peerCount is the number of leases the backend programs: the guard's
// accepted ones (a second set of 10000 keys here cost about 1 MB), or
// without a guard the keys tracked in peers.
func (d *Daemon) peerCount(peers map[string]struct{}) int {
	if d.guard != nil {
		return d.guard.Accepted()
	}
	return len(peers)
}

// watchStatus hears from a subnet manager that rides out outages itself.
func (d *Daemon) watchStatus(err error) {
	if err != nil {
		d.ready.deaf(fmt.Sprintf("cannot follow other nodes' leases: %v", err))
		return
	}
	d.ready.hearing()
}

// watchBatch is one batch from WatchLeases; snapshot marks the first batch
// of a (re-)established watch: the full current set.
type watchBatch struct {
	events   []lease.Event
	snapshot bool
	arrived  time.Time // when the watch delivered it: the start of flannel_lease_event_apply_duration_seconds
}

// watch runs WatchLeases until ctx ends. The contract says it returns only
// then; if it returns earlier (an error), the node is deaf: it says so on
// /readyz and re-establishes the watch with back-off.
func (d *Daemon) watch(ctx context.Context, out chan<- watchBatch) {
	bo := pace.New(pace.Policy{Min: 200 * time.Millisecond, Max: 10 * time.Second, Stable: time.Minute})
	for {
		started := time.Now()
		err := d.watchOnce(ctx, out)
		if ctx.Err() != nil {
			return
		}
		bo.Settled(time.Since(started))
		d.metrics.DatastoreFails.Inc()
		wait := bo.Next()
		reason := fmt.Sprintf("the lease watch on %s ended: %v; re-establishing it", d.mgr.Name(), err)
		klog.Errorf("%s (in %s)", reason, wait)
		d.ready.deaf(reason)
		if ctxwait.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// watchOnce relays one WatchLeases call's batches, marking the first.
func (d *Daemon) watchOnce(ctx context.Context, out chan<- watchBatch) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan []lease.Event)
	done := make(chan error, 1)
	go func() { done <- d.mgr.WatchLeases(wctx, events) }()
	first := true
	for {
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("it returned without an error")
			}
			return err
		case evs := <-events:
			select {
			case out <- watchBatch{events: evs, snapshot: first, arrived: time.Now()}:
				first = false
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// resnapshot turns the full set sent by a re-established watch into the
// difference the backend needs: Removed events for leases it was told
// about that are gone now, then the set itself (unchanged leases are
// no-ops for a backend). Only keys are kept (a copy of 10000 leases would
// cost MiB): a Removed event carries the lease's subnets, and the lease
// guard hands the backend the full lease it had accepted.
func resnapshot(known map[string]struct{}, snapshot []lease.Event) []lease.Event {
	present := map[string]bool{}
	for _, ev := range snapshot {
		if ev.Type != lease.Removed {
			present[ev.Lease.Key()] = true
		}
	}
	var out []lease.Event
	for key := range known {
		if present[key] {
			continue
		}
		v4, v6, err := lease.ParseKey(key)
		if err != nil {
			klog.Errorf("forget lease %s: %v", key, err)
			continue
		}
		out = append(out, lease.Event{Type: lease.Removed, Lease: lease.Lease{Subnet: v4, IPv6Subnet: v6}})
	}
	return append(out, snapshot...)
}

// trackKeys folds a batch into a set of keys: for counting, a copy of
// each lease (10000 of them at scale) would be wasted memory.
func trackKeys(keys map[string]struct{}, batch []lease.Event) {
	for _, ev := range batch {
		if ev.Type == lease.Removed {
			delete(keys, ev.Lease.Key())
		} else {
			keys[ev.Lease.Key()] = struct{}{}
		}
	}
}

// readyWithoutPeers serves a network that ignores other nodes (alloc): it
// is ready once subnet.env is written, and no lease watch is started.
func (d *Daemon) readyWithoutPeers(ctx context.Context) {
	d.metrics.Pass(metrics.CondNetwork)
	klog.Info("ready: this backend does not follow other nodes' leases")
	go d.announceReady(ctx)
	releaseMemory()
	<-ctx.Done()
}

// readyAnnouncer is a subnet manager that tells its datastore when the node's
// network is up (Kubernetes: the NetworkUnavailable condition).
type readyAnnouncer interface {
	MarkReady(ctx context.Context) error
}

// announceReady calls MarkReady until it succeeds or ctx ends.
func (d *Daemon) announceReady(ctx context.Context) {
	r, ok := d.mgr.(readyAnnouncer)
	if !ok {
		return
	}
	_ = retry(ctx, "mark node network available in "+d.mgr.Name(), d.metrics, func() error { return r.MarkReady(ctx) })
}
