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
	"github.com/flannelgo/flannel/internal/leaseset"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/pace"
	"github.com/flannelgo/flannel/internal/subnet"
)

// followPeers feeds other nodes' lease events through the lease set to the
// backend until ctx ends. The node becomes ready once the first (complete)
// batch is applied, and is not ready while the lease watch is broken.
func (d *Daemon) followPeers(ctx context.Context, peers *leaseset.Set, nw backend.Network, own *lease.Lease, renewNow chan<- struct{}) {
	if _, ok := nw.(backend.PeerIndifferent); ok {
		d.readyWithoutPeers(ctx)
		return
	}
	batches := make(chan watchBatch)
	if r, ok := d.mgr.(subnet.WatchStatusReporter); ok {
		r.ReportWatchStatus(d.watchStatus)
	}
	go d.watch(ctx, batches)
	to := []leaseset.Receiver{nw}
	if d.prober != nil {
		to = append(to, d.prober)
	}
	self := ownView{lease: own}
	first := true
	for {
		var b watchBatch
		select {
		case <-ctx.Done():
			return
		case b = <-batches:
		}
		others := d.otherNodes(b, &self, renewNow)
		start := time.Now()
		o := peers.Apply(ctx, others, b.snapshot && !first, to...)
		klog.V(2).Infof("applied %d lease events in %s", len(o.Applied), time.Since(start))
		d.account(b, o, peers, &self)
		switch {
		case first:
			first = false
			d.ready.applied()
			klog.Infof("ready: %d peers programmed", peers.Accepted())
			go d.announceReady(ctx)
			notifySystemd("READY=1")
			tightenGC()
			releaseMemory()
		case len(o.Applied) >= bigBatch:
			releaseMemory()
		}
	}
}

// account records one applied batch: its events and refusals, the time
// from the watch to the backend, the peers programmed, the leases the
// datastore holds (the pool), and that the watch hears again after a
// snapshot.
func (d *Daemon) account(b watchBatch, o leaseset.Outcome, peers *leaseset.Set, self *ownView) {
	if o.HostErr != nil {
		klog.Warningf("read this node's addresses and routes to screen leases: %v (checking leases without them)", o.HostErr)
	}
	for _, r := range o.Rejected {
		d.metrics.LeasesRejected.WithLabelValues(r.Reason).Inc()
		klog.Errorf("%s; it is not programmed (fix or delete the key in the datastore)", r)
	}
	for _, ev := range o.Applied {
		d.metrics.LeaseEvents.WithLabelValues(ev.Type.String()).Inc()
	}
	if len(o.Applied) > 0 {
		d.metrics.LeaseApply.Observe(time.Since(b.arrived).Seconds())
	}
	d.metrics.Peers.Set(float64(peers.Accepted()))
	d.metrics.PoolUsed.Set(float64(peers.Len() + self.count()))
	if b.snapshot {
		d.ready.hearing()
	}
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
