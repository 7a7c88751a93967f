package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/pace"
	"github.com/flannelgo/flannel/internal/subnet"
)

// ownView is what the follow loop knows of this node's own lease.
type ownView struct {
	lease  *lease.Lease
	listed bool // the datastore holds it, as far as the watch said
}

// count is 1 while the datastore holds the own lease: its part of the pool.
func (v *ownView) count() int {
	if v.listed {
		return 1
	}
	return 0
}

// otherNodes drops this node's own lease from a batch. If the own lease was
// deleted behind our back (a Removed event, or a re-established watch that
// no longer lists it), it asks the renew loop to re-create it at once.
func (d *Daemon) otherNodes(b watchBatch, self *ownView, renewNow chan<- struct{}) []lease.Event {
	own := self.lease
	out := make([]lease.Event, 0, len(b.events))
	listedNow := false
	for _, ev := range b.events {
		if ev.Lease.Key() != own.Key() {
			out = append(out, ev)
			continue
		}
		d.noticeOverwrite(ev, own)
		listedNow = ev.Type != lease.Removed
		if !listedNow {
			ownGone(own, renewNow)
		}
		self.listed = listedNow
	}
	if b.snapshot && !listedNow && self.listed {
		self.listed = false
		ownGone(own, renewNow)
	}
	return out
}

func ownGone(own *lease.Lease, renewNow chan<- struct{}) {
	klog.Warningf("this node's lease %s was removed from the datastore; re-creating it", own.Key())
	select {
	case renewNow <- struct{}{}:
	default:
	}
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

// reasserter is a subnet manager that can write this node's lease back
// over another writer's value (etcd); see etcd.Manager.ReassertLease.
type reasserter interface {
	ReassertLease(ctx context.Context, l *lease.Lease, seenRevision int64) (bool, error)
}

// noticeOverwrite handles an event for the node's own key: another value
// than ours means another writer overwrote it; the renew loop writes it
// back. Our own writes (renewals, re-creations) carry our attributes.
func (d *Daemon) noticeOverwrite(ev lease.Event, own *lease.Lease) {
	if _, ok := d.mgr.(reasserter); !ok || ev.Type != lease.Added || sameAttrs(ev.Lease.Attrs, own.Attrs) {
		return
	}
	a, b := own.Attrs, ev.Lease.Attrs
	v6 := ""
	if a.PublicIPv6.IsValid() || b.PublicIPv6.IsValid() {
		v6 = fmt.Sprintf(", PublicIPv6 %s -> %s", showAddr(a.PublicIPv6), showAddr(b.PublicIPv6))
	}
	klog.Errorf("this node's lease %s was overwritten by another writer (revision %d): PublicIP %s -> %s%s, VtepMAC %s -> %s, backend %q -> %q; writing ours back",
		own.Key(), ev.Lease.Revision, showAddr(a.PublicIP), showAddr(b.PublicIP), v6, vtepMAC(a), vtepMAC(b), a.BackendType, b.BackendType)
	select {
	case d.reassert <- ev.Lease.Revision:
	default:
		// A re-assert is pending; it will see the newest value's revision
		// fail its compare and the next event brings that revision.
		select {
		case <-d.reassert:
		default:
		}
		d.reassert <- ev.Lease.Revision
	}
}

// reassertOwn writes own back over the value at revision seen. A writer
// that keeps overwriting (another daemon convinced the subnet is its own)
// is answered ever more slowly, so the two do not hammer the datastore.
func (d *Daemon) reassertOwn(ctx context.Context, own *lease.Lease, seen int64, fight *fightState) {
	if delay := fight.next(); delay > 0 {
		klog.Errorf("lease %s overwritten %d times in a row; is another flanneld using this node's subnet? waiting %s before writing it back", own.Key(), fight.count, delay)
		if ctxwait.Sleep(ctx, delay) != nil {
			return
		}
	}
	wrote, err := d.mgr.(reasserter).ReassertLease(ctx, own, seen)
	switch {
	case err != nil:
		klog.Errorf("write back lease %s: %v (retrying in 1s)", own.Key(), err)
		time.AfterFunc(time.Second, func() {
			select {
			case d.reassert <- seen:
			default:
			}
		})
	case wrote:
		d.metrics.OwnLeaseReasserted.Inc()
		klog.Infof("wrote back this node's lease %s", own)
	default:
		klog.V(1).Infof("lease %s changed again since revision %d; the next event decides", own.Key(), seen)
	}
}

// fightState tracks re-asserts that follow each other closely: the first
// three are answered at once, the next ever more slowly; ten quiet seconds
// end the fight.
type fightState struct {
	last  time.Time
	count int
	slow  *pace.Backoff
}

func (f *fightState) next() time.Duration {
	if f.slow == nil {
		f.slow = pace.New(pace.Policy{Min: 200 * time.Millisecond, Max: 30 * time.Second})
	}
	if time.Since(f.last) > 10*time.Second {
		f.count = 0
		f.slow.Reset()
	}
	f.last = time.Now()
	f.count++
	if f.count <= 3 {
		return 0
	}
	return f.slow.Next()
}

func sameAttrs(a, b lease.Attrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 && a.BackendType == b.BackendType &&
		sameJSON(a.BackendData, b.BackendData) && sameJSON(a.BackendV6Data, b.BackendV6Data)
}

func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

func showAddr(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

// vtepMAC names a lease's VTEP for a log line; "-" when it has none.
func vtepMAC(a lease.Attrs) string {
	var data struct{ VtepMAC string }
	if json.Unmarshal(a.BackendData, &data) != nil || data.VtepMAC == "" {
		return "-"
	}
	return data.VtepMAC
}
