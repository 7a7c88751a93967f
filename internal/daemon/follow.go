package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/imagetrim"
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
		d.metrics.Peers.Set(float64(d.peerCount(peers)))
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

// bigBatch is the size from which a batch counts as a start-up or re-list
// burst after which memory is handed back at once.
const bigBatch = 1000

// releaseMemory returns the heap freed by a burst to the kernel, and the
// pages of the program image the burst touched. Applying the full lease
// set at start-up (the listing, the backend's state, its listing of the
// kernel's routes and neighbours to reconcile) leaves tens of MiB of
// garbage that the runtime would otherwise give back only over minutes;
// and start-up runs code (every package's init, the first listing and
// programming) that never runs again but stays mapped. It costs one extra
// garbage collection of the live heap and a few thousand minor faults to
// map back the code still in use, about 15 ms of CPU per burst. With 10000
// peers (test/scale, etcd mode, steady state) the resident size falls by
// about a quarter; docs/SCALE.md has the figures.
func releaseMemory() {
	start := time.Now()
	debug.FreeOSMemory()
	res, err := imagetrim.Trim()
	if err != nil {
		klog.Warningf("could not release the program's start-up pages (harmless: only the resident size stays higher): %v", err)
	}
	klog.V(2).Infof("returned freed memory and %.1f MiB of program pages (%d mappings) to the kernel in %s",
		float64(res.Resident)/(1<<20), res.Mappings, time.Since(start))
}

// steadyGCPercent is the garbage collector's target once the node is ready:
// the heap grows to 1.1 times the live data before a collection, not twice.
// What a running node allocates is the 30 s reconcile's kernel dumps and
// the peer probes, garbage at once; at Go's default the heap, and with it
// the resident size, settles at twice the live data. Measured with 10000
// peers 40 s after start-up (test/scale -settle 40s, two runs each): RSS
// 46.4 MiB at 50, 39.6-40.2 at 20, 38.6-39.3 at 10, for 1.3, 1.4 and 1.7 %
// of one core. The start-up burst itself runs with Go's default of 100 for
// speed. A GOGC in the environment wins.
const steadyGCPercent = 10

func tightenGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(steadyGCPercent)
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
			case out <- watchBatch{events: evs, snapshot: first}:
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

// otherNodes drops this node's own lease from a batch. If the own lease was
// deleted behind our back, it asks the renew loop to re-create it at once.
func (d *Daemon) otherNodes(batch []lease.Event, own *lease.Lease, renewNow chan<- struct{}) []lease.Event {
	out := make([]lease.Event, 0, len(batch))
	for _, ev := range batch {
		if ev.Lease.Key() != own.Key() {
			out = append(out, ev)
			continue
		}
		d.noticeOverwrite(ev, own)
		if ev.Type == lease.Removed {
			klog.Warningf("this node's lease %s was removed from the datastore; re-creating it", own.Key())
			select {
			case renewNow <- struct{}{}:
			default:
			}
		}
	}
	return out
}

// renewLoop renews the lease RenewMargin before it expires, and at once
// when asked to. When another node has taken the subnet it stops the
// daemon with that error.
func (d *Daemon) renewLoop(ctx context.Context, own *lease.Lease, renewNow <-chan struct{}, stop context.CancelCauseFunc) {
	const retryEvery = 10 * time.Second
	wait := d.untilRenewal(own)
	var fight fightState
	for {
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case seen := <-d.reassert:
			timer.Stop()
			d.reassertOwn(ctx, own, seen, &fight)
			wait = d.untilRenewal(own)
			continue
		case <-renewNow:
			timer.Stop()
		case <-timer.C:
		}
		if err := d.mgr.RenewLease(ctx, own); err != nil {
			if ctx.Err() != nil {
				return
			}
			d.metrics.LeaseRenewals.WithLabelValues("error").Inc()
			if errors.Is(err, subnet.ErrLeaseTaken) {
				stop(err)
				return
			}
			klog.Errorf("renew lease %s: %v (retrying in %s; it expires %s)", own.Key(), err, retryEvery, own.Expiration.Format(time.RFC3339))
			wait = retryEvery
			continue
		}
		d.metrics.LeaseRenewals.WithLabelValues("ok").Inc()
		d.metrics.LeaseExpiry.Set(float64(own.Expiration.Unix()))
		klog.Infof("renewed lease %s until %s", own.Key(), own.Expiration.Format(time.RFC3339))
		wait = d.untilRenewal(own)
	}
}

// untilRenewal is how long to wait before renewing own. A lease without
// expiry (the Kubernetes manager's) is renewed only when asked to.
func (d *Daemon) untilRenewal(own *lease.Lease) time.Duration {
	if own.Expiration.IsZero() {
		return time.Duration(math.MaxInt64)
	}
	return time.Until(own.Expiration.Add(-d.opts.RenewMargin))
}

// reportSameAddress logs, once per lease, another node that advertises this
// node's public address: the VXLAN FDB (or host-gw route) for one of the two
// subnets then leads to the wrong machine.
func reportSameAddress(ev lease.Event, own *lease.Lease, reported map[string]bool) {
	key := ev.Lease.Key()
	if ev.Type == lease.Removed {
		delete(reported, key)
		return
	}
	a, b := ev.Lease.Attrs, own.Attrs
	same := (b.PublicIP.IsValid() && !b.PublicIP.IsUnspecified() && a.PublicIP == b.PublicIP) ||
		(b.PublicIPv6.IsValid() && a.PublicIPv6 == b.PublicIPv6)
	if !same || reported[key] {
		return
	}
	reported[key] = true
	klog.Errorf("duplicate public address: lease %s (another node) advertises the same address as this node's lease %s (%s): "+
		"one of them will not receive its traffic; give each node its own address with --iface, --iface-regex, --iface-can-reach or --public-ip",
		key, own.Key(), b.PublicIP)
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
