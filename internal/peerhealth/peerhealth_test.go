package peerhealth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/testbed/tbtest"
)

// fakePinger answers unless its target is in down; it counts probes.
type fakePinger struct {
	mu    sync.Mutex
	down  map[netip.Addr]bool
	count atomic.Int64
}

func (f *fakePinger) Ping(_ context.Context, dst netip.Addr, _ int, _ bool, _ time.Duration) (time.Duration, error) {
	f.count.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[dst] {
		return 0, errors.New("lost")
	}
	return 300 * time.Microsecond, nil
}

func (f *fakePinger) set(a netip.Addr, down bool) {
	f.mu.Lock()
	f.down[a] = down
	f.mu.Unlock()
}

func vxlanLease(subnet, pub string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan"}}
}

// series reads the value of name{subnet=...} from reg without creating
// the series; ok is false when it does not exist.
func series(t *testing.T, reg *prometheus.Registry, name, subnet string) (v float64, ok bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "subnet" && l.GetValue() == subnet {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A peer goes unreachable after consecutive losses and comes back; each
// change is logged once. Only a peer with losses has per-peer series, and
// they disappear once its last 10 probes were answered; the aggregates
// count every peer.
func TestReachabilityTransitions(t *testing.T) {
	logs := tbtest.CaptureLogs(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	fp := &fakePinger{down: map[netip.Addr]bool{}}
	p := New(40*time.Millisecond, fp, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	a, b := vxlanLease("10.244.1.0/24", "198.51.100.11"), vxlanLease("10.244.2.0/24", "198.51.100.12")
	p.Update([]lease.Event{{Type: lease.Added, Lease: a}, {Type: lease.Added, Lease: b}})
	waitFor(t, time.Second, "4 probes answered", func() bool { return testutil.ToFloat64(m.Probes.WithLabelValues("reply")) >= 4 })
	if n := testutil.CollectAndCount(m.Reachable); n != 0 || testutil.ToFloat64(m.Probed) != 2 {
		t.Errorf("healthy peers: %d flannel_peer_reachable series, flannel_peers_probed %v; want 0 and 2", n, testutil.ToFloat64(m.Probed))
	}
	reach := func(subnet string, want float64) func() bool {
		return func() bool { v, ok := series(t, reg, "flannel_peer_reachable", subnet); return ok && v == want }
	}
	fp.set(netip.MustParseAddr("10.244.1.0"), true)
	waitFor(t, time.Second, "a's reachable series is 0", reach("10.244.1.0-24", 0))
	// Several more lost probes (the loss ratio over the last 10 climbs to
	// 1), and still one log line.
	waitFor(t, 3*time.Second, "a's loss ratio is 1", func() bool { v, _ := series(t, reg, "flannel_peer_loss_ratio", "10.244.1.0-24"); return v == 1 })
	if got := logs.Matching("10.244.1.0-24", "is unreachable"); len(got) != 1 {
		t.Errorf("unreachable logged %d times, want once: %q", len(got), got)
	}
	if _, ok := series(t, reg, "flannel_peer_reachable", "10.244.2.0-24"); ok || testutil.ToFloat64(m.Unreachable) != 1 {
		t.Errorf("healthy b has series: %v; flannel_peers_unreachable %v, want 1", ok, testutil.ToFloat64(m.Unreachable))
	}
	fp.set(netip.MustParseAddr("10.244.1.0"), false)
	waitFor(t, time.Second, "a's reachable series is 1", reach("10.244.1.0-24", 1))
	if got := logs.Matching("10.244.1.0-24", "reachable again"); len(got) != 1 {
		t.Errorf("recovery logged %d times, want once: %q", len(got), got)
	}
	waitFor(t, 2*time.Second, "a's series gone after 10 answered probes", func() bool { return testutil.CollectAndCount(m.Reachable) == 0 })
	if testutil.ToFloat64(m.Unreachable) != 0 || testutil.ToFloat64(m.Troubled) != 0 {
		t.Errorf("flannel_peers_unreachable %v, flannel_peers_with_losses %v, want 0", testutil.ToFloat64(m.Unreachable), testutil.ToFloat64(m.Troubled))
	}
	p.Update([]lease.Event{{Type: lease.Removed, Lease: b}})
	if got := testutil.ToFloat64(m.Probed); got != 1 {
		t.Errorf("flannel_peers_probed %v after removing a peer, want 1", got)
	}
}

// With more peers in trouble than MaxPeerSeries, only MaxPeerSeries have
// per-peer series; the aggregates count all, and removing the peers
// removes their series.
func TestPeerSeriesBounded(t *testing.T) {
	const peers = MaxPeerSeries + 50
	m := NewMetrics(prometheus.NewRegistry())
	fp := &fakePinger{down: map[netip.Addr]bool{}}
	p := New(20*time.Millisecond, fp, m)
	var evs []lease.Event
	for i := range peers {
		l := vxlanLease(fmt.Sprintf("10.244.%d.0/24", i+1), "198.51.100.2")
		fp.set(l.Subnet.Addr(), true)
		evs = append(evs, lease.Event{Type: lease.Added, Lease: l})
	}
	p.Update(evs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	waitFor(t, 3*time.Second, "every peer unreachable", func() bool { return testutil.ToFloat64(m.Unreachable) == peers })
	if n := testutil.CollectAndCount(m.Reachable); n != MaxPeerSeries {
		t.Errorf("%d flannel_peer_reachable series, want %d", n, MaxPeerSeries)
	}
	if got := testutil.ToFloat64(m.Unlabelled); got != peers-MaxPeerSeries {
		t.Errorf("flannel_peers_with_losses_unlabelled %v, want %d", got, peers-MaxPeerSeries)
	}
	for i := range evs {
		evs[i].Type = lease.Removed
	}
	p.Update(evs)
	if n := testutil.CollectAndCount(m.Reachable); n != 0 || testutil.ToFloat64(m.Unreachable) != 0 || testutil.ToFloat64(m.Probed) != 0 {
		t.Errorf("after removing every peer: %d series, %v unreachable, %v probed; want none", n, testutil.ToFloat64(m.Unreachable), testutil.ToFloat64(m.Probed))
	}
}

// Probes are spread over the interval: with 1000 peers and a 1 s interval
// about 1000 probes go out per second, not a burst of 1000 every second.
func TestRateAndSpread(t *testing.T) {
	fp := &fakePinger{down: map[netip.Addr]bool{}}
	p := New(time.Second, fp, NewMetrics(prometheus.NewRegistry()))
	var evs []lease.Event
	for i := range 1000 {
		evs = append(evs, lease.Event{Type: lease.Added, Lease: lease.Lease{
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i / 4), byte(i % 4 * 64)}), 26),
			Attrs:  lease.Attrs{PublicIP: netip.MustParseAddr("198.51.100.2"), BackendType: "vxlan"}}})
	}
	p.Update(evs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	time.Sleep(500 * time.Millisecond)
	half := fp.count.Load()
	time.Sleep(2500 * time.Millisecond)
	total := fp.count.Load()
	if half < 250 || half > 750 {
		t.Errorf("%d probes in the first 0.5 s, want about 500 (spread, not a burst)", half)
	}
	if total < 2400 || total > 3300 {
		t.Errorf("%d probes in 3 s for 1000 peers at 1 s, want about 3000", total)
	}
}
