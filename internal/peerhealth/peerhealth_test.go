package peerhealth

import (
	"context"
	"errors"
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

func waitGauge(t *testing.T, g prometheus.Gauge, want float64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if testutil.ToFloat64(g) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gauge stayed %v, want %v within %s", testutil.ToFloat64(g), want, within)
}

// A peer goes unreachable after consecutive losses and comes back; each
// change is logged once; a removed peer's series disappear.
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
	ra := m.Reachable.WithLabelValues("10.244.1.0-24", "198.51.100.11")
	waitGauge(t, ra, 1, time.Second)
	fp.set(netip.MustParseAddr("10.244.1.0"), true)
	waitGauge(t, ra, 0, time.Second)
	// Several more lost probes (the loss ratio over the last 10 climbs to
	// 1), and still one log line.
	waitGauge(t, m.Loss.WithLabelValues("10.244.1.0-24", "198.51.100.11"), 1, 3*time.Second)
	if got := logs.Matching("10.244.1.0-24", "is unreachable"); len(got) != 1 {
		t.Errorf("unreachable logged %d times, want once: %q", len(got), got)
	}
	if got := testutil.ToFloat64(m.Reachable.WithLabelValues("10.244.2.0-24", "198.51.100.12")); got != 1 {
		t.Errorf("the other peer's reachable = %v, want 1", got)
	}
	fp.set(netip.MustParseAddr("10.244.1.0"), false)
	waitGauge(t, ra, 1, time.Second)
	if got := logs.Matching("10.244.1.0-24", "reachable again"); len(got) != 1 {
		t.Errorf("recovery logged %d times, want once: %q", len(got), got)
	}
	p.Update([]lease.Event{{Type: lease.Removed, Lease: b}})
	if n := testutil.CollectAndCount(m.Reachable); n != 1 {
		t.Errorf("%d flannel_peer_reachable series after removing a peer, want 1", n)
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
