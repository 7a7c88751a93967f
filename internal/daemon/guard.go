package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/pace"
)

// screen reports other nodes advertising this node's address, then lets
// through only the leases the guard accepts, logging each refusal once.
func (d *Daemon) screen(others []lease.Event, own *lease.Lease, twins map[string]bool) []lease.Event {
	for _, ev := range others {
		reportSameAddress(ev, own, twins)
	}
	if d.guard == nil {
		return others
	}
	out, refused, err := d.guard.Filter(others)
	if err != nil {
		klog.Warningf("read this node's addresses and routes to screen leases: %v (checking leases without them)", err)
	}
	for _, r := range refused {
		d.metrics.LeasesRejected.WithLabelValues(r.Reason).Inc()
		klog.Errorf("%s; it is not programmed (fix or delete the key in the datastore)", r)
	}
	return out
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

// configPollEvery is how often a running daemon compares the datastore's
// network config with the one it runs with.
const configPollEvery = 5 * time.Second

// watchConfig reports, instead of silently ignoring, a network config that
// changed under the running daemon: it takes effect only on restart, and
// until then leases of the new network are refused as outside the network.
func (d *Daemon) watchConfig(ctx context.Context, running *config.Config) {
	reported := ""
	pace.Every(ctx, configPollEvery, 0.1, func(ctx context.Context) bool {
		cur, err := d.mgr.GetNetworkConfig(ctx)
		if err != nil {
			klog.V(1).Infof("re-read network config: %v", err)
			return true
		}
		diff := configDiff(running, cur)
		if diff == "" {
			if reported != "" {
				klog.Infof("network config in %s matches the running one again", d.mgr.Name())
				d.metrics.ConfigMismatch.Set(0)
				d.metrics.Pass(metrics.CondConfig)
				reported = ""
			}
			return true
		}
		if diff != reported {
			reported = diff
			klog.Errorf("network config in %s changed under the running daemon: %s; it takes effect when flanneld restarts", d.mgr.Name(), diff)
			d.metrics.ConfigMismatch.Set(1)
			d.metrics.Fail(metrics.CondConfig, "network config changed: "+diff+"; restart flanneld to apply it")
		}
		return true
	})
}

// configDiff names what differs between the running and the current
// config, or "" when nothing that matters does.
func configDiff(run, cur *config.Config) string {
	switch {
	case run.Network != cur.Network || run.SubnetLen != cur.SubnetLen:
		return fmt.Sprintf("Network %s/SubnetLen %d is now %s/SubnetLen %d", run.Network, run.SubnetLen, cur.Network, cur.SubnetLen)
	case run.IPv6Network != cur.IPv6Network || run.IPv6SubnetLen != cur.IPv6SubnetLen:
		return fmt.Sprintf("IPv6Network %s/IPv6SubnetLen %d is now %s/IPv6SubnetLen %d", run.IPv6Network, run.IPv6SubnetLen, cur.IPv6Network, cur.IPv6SubnetLen)
	case run.BackendType != cur.BackendType || !sameJSON(run.Backend, cur.Backend):
		return fmt.Sprintf("Backend %s is now %s", cut(run.Backend), cut(cur.Backend))
	case run.SubnetMin != cur.SubnetMin || run.SubnetMax != cur.SubnetMax:
		return fmt.Sprintf("SubnetMin..SubnetMax %s..%s is now %s..%s", run.SubnetMin, run.SubnetMax, cur.SubnetMin, cur.SubnetMax)
	}
	return ""
}

// cut bounds raw JSON for a log line.
func cut(b []byte) string {
	const n = 200
	if len(b) > n {
		return fmt.Sprintf("%s...(%d bytes)", b[:n], len(b))
	}
	return string(b)
}
