package peerhealth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/probe"
)

// fakePinger stands in for probe.Pinger. With answering set it answers
// every probe whose target is not down, on its own goroutine as the real
// reader does; the others stay out until cancelled, and are kept in sent
// so that a test can answer them by hand, also too late.
type fakePinger struct {
	answers chan func() // nil: nothing is answered but by hand
	stop    chan struct{}
	count   atomic.Int64

	mu      sync.Mutex
	down    map[netip.Addr]bool
	refused map[netip.Addr]bool // Send fails, as for a target without a route
	lastID  probe.ID
	sent    []fakeProbe
	out     map[probe.ID]bool // sent, neither answered nor cancelled
}

type fakeProbe struct {
	id      probe.ID
	dst     netip.Addr
	onReply func(time.Duration)
}

func newFakePinger(t *testing.T, answering bool) *fakePinger {
	f := &fakePinger{down: map[netip.Addr]bool{}, refused: map[netip.Addr]bool{}, out: map[probe.ID]bool{}}
	if answering {
		// The prober's Run may outlive the test by a moment: Send
		// after the test drops its answer.
		f.answers, f.stop = make(chan func(), 1<<16), make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case answer := <-f.answers:
					answer()
				case <-f.stop:
					return
				}
			}
		}()
		t.Cleanup(func() { close(f.stop); <-done })
	}
	return f
}

func (f *fakePinger) Send(dst netip.Addr, _ int, _ bool, onReply func(time.Duration)) (probe.ID, error) {
	f.count.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refused[dst] {
		return 0, errors.New("network is unreachable")
	}
	f.lastID++
	id := f.lastID
	if f.answers != nil && !f.down[dst] {
		select {
		case f.answers <- func() { onReply(300 * time.Microsecond) }:
		case <-f.stop:
		}
		return id, nil
	}
	f.sent = append(f.sent, fakeProbe{id: id, dst: dst, onReply: onReply})
	f.out[id] = true
	return id, nil
}

func (f *fakePinger) Cancel(id probe.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	was := f.out[id]
	delete(f.out, id)
	return was
}

func (f *fakePinger) set(a netip.Addr, down bool) {
	f.mu.Lock()
	f.down[a] = down
	f.mu.Unlock()
}

// outstanding is how many probes are out: sent, not answered, not
// cancelled.
func (f *fakePinger) outstanding() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.out)
}

// answer calls back every probe to dst that is still out, as the reader
// would on their replies, and says how many there were.
func (f *fakePinger) answer(dst netip.Addr) int {
	var calls []func(time.Duration)
	f.mu.Lock()
	for _, s := range f.sent {
		if s.dst == dst && f.out[s.id] {
			delete(f.out, s.id)
			calls = append(calls, s.onReply)
		}
	}
	f.mu.Unlock()
	for _, onReply := range calls {
		onReply(300 * time.Microsecond)
	}
	return len(calls)
}

// last is the latest probe sent to dst (answered or not).
func (f *fakePinger) last(t *testing.T, dst netip.Addr) fakeProbe {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.sent) - 1; i >= 0; i-- {
		if f.sent[i].dst == dst {
			return f.sent[i]
		}
	}
	t.Fatalf("no probe sent to %s", dst)
	return fakeProbe{}
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
	fp := newFakePinger(t, true)
	p := New(40*time.Millisecond, fp, m, "UDP 8472 (VXLAN)")
	p.maxRate = 0 // this test probes faster than the cap
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
	fp := newFakePinger(t, true)
	p := New(20*time.Millisecond, fp, m, "UDP 8472 (VXLAN)")
	p.maxRate = 0 // this test probes faster than the cap
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
	fp := newFakePinger(t, true)
	p := New(time.Second, fp, NewMetrics(prometheus.NewRegistry()), "UDP 8472 (VXLAN)")
	p.maxRate = 0 // this test probes faster than the cap
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

// Probes out cost no goroutine: with 5000 peers that never answer and the
// timeout equal to the interval, about 5000 probes are out at any time,
// and the prober runs on one goroutine (Run) all the same.
func TestProbesOutNoGoroutines(t *testing.T) {
	const peers = 5000
	fp := newFakePinger(t, false)
	m := NewMetrics(prometheus.NewRegistry())
	p := New(time.Second, fp, m, "UDP 8472 (VXLAN)")
	p.maxRate = 0 // this test probes faster than the cap
	var evs []lease.Event
	for i := range peers {
		evs = append(evs, lease.Event{Type: lease.Added, Lease: lease.Lease{
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24),
			Attrs:  lease.Attrs{PublicIP: netip.MustParseAddr("198.51.100.2"), BackendType: "vxlan"}}})
	}
	before := runtime.NumGoroutine()
	p.Update(evs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	waitFor(t, 5*time.Second, "4500 probes out", func() bool { return fp.outstanding() >= 4500 })
	if extra := runtime.NumGoroutine() - before; extra > 2 {
		t.Errorf("%d goroutines more than before with %d probes out, want at most 2 (Run, and one the runtime may start)", extra, fp.outstanding())
	}
	waitFor(t, 5*time.Second, "every peer unreachable", func() bool { return testutil.ToFloat64(m.Unreachable) == peers })
	cancel()
	waitFor(t, 5*time.Second, "probes out cancelled when Run ends", func() bool { return fp.outstanding() == 0 })
}

// On a clock the test sets (tick): an unanswered probe is lost exactly at
// its timeout, a reply after that is ignored, a probe the kernel refuses
// is lost at once, and the results of probes out to a peer that is
// removed or replaced meanwhile are dropped.
func TestTimeoutsAndLateReplies(t *testing.T) {
	const interval, timeout = 10 * time.Second, maxTimeout
	m := NewMetrics(prometheus.NewRegistry())
	fp := newFakePinger(t, false)
	p := New(interval, fp, m, "UDP 8472 (VXLAN)")
	a, b, c, d := vxlanLease("10.244.1.0/24", "198.51.100.11"), vxlanLease("10.244.2.0/24", "198.51.100.12"),
		vxlanLease("10.244.3.0/24", "198.51.100.13"), vxlanLease("10.244.4.0/24", "198.51.100.14")
	ta, tb := a.Subnet.Addr(), b.Subnet.Addr()
	fp.refused[d.Subnet.Addr()] = true
	p.Update([]lease.Event{{Type: lease.Added, Lease: a}, {Type: lease.Added, Lease: b}, {Type: lease.Added, Lease: c}, {Type: lease.Added, Lease: d}})
	counts := func(when string, replies, lost float64) {
		t.Helper()
		if r, l := testutil.ToFloat64(p.replies), testutil.ToFloat64(p.lost); r != replies || l != lost {
			t.Errorf("%s: %v replies, %v lost; want %v and %v", when, r, l, replies, lost)
		}
	}
	t0 := time.Now().Add(interval) // every peer's first probe is due by then
	if wait := p.tick(t0); wait != timeout {
		t.Errorf("after sending, the prober sleeps %s, want %s (until the probes' deadline)", wait, timeout)
	}
	if n := fp.outstanding(); n != 3 {
		t.Fatalf("%d probes out, want 3", n)
	}
	counts("refused probe", 0, 1)
	if fp.answer(ta) != 1 {
		t.Fatal("a's probe not out")
	}
	counts("a answered", 1, 1)
	fp.last(t, ta).onReply(time.Millisecond) // a duplicate reply
	counts("a answered twice", 1, 1)
	p.tick(t0.Add(timeout - time.Nanosecond))
	counts("1 ns before the deadline", 1, 1)
	p.tick(t0.Add(timeout))
	counts("at the deadline", 1, 3)
	if n := fp.outstanding(); n != 0 {
		t.Errorf("%d probes still out after their deadline, want them cancelled", n)
	}
	fp.last(t, tb).onReply(time.Millisecond) // the reader had b's reply just as it expired
	counts("b's reply after its deadline", 1, 3)

	// Second round: b is removed and c replaced while their probes are out.
	t1 := t0.Add(interval + interval/10)
	p.tick(t1)
	c2 := c
	c2.Attrs.PublicIP = netip.MustParseAddr("198.51.100.23")
	p.Update([]lease.Event{{Type: lease.Removed, Lease: b}, {Type: lease.Added, Lease: c2}})
	if fp.answer(tb) != 1 {
		t.Fatal("b's second probe not out")
	}
	p.tick(t1.Add(timeout)) // a's and c's probes lost; only a's counts
	counts("probes to a removed and a replaced peer", 1, 5)
	if got := testutil.ToFloat64(m.Troubled); got != 2 {
		t.Errorf("flannel_peers_with_losses %v, want 2 (a and d; b is gone, the new c has no result yet)", got)
	}
}

// Above maxRate peers per second, each peer's probes are spaced out so
// that the node sends at most maxRate probes a second: 3000 peers at 1 s
// with a cap of 500 are probed every 6 s, about 500 a second.
func TestProbeRateCapped(t *testing.T) {
	const peers, rate = 3000, 500
	fp := newFakePinger(t, true)
	p := New(time.Second, fp, NewMetrics(prometheus.NewRegistry()), "UDP 8472 (VXLAN)")
	p.maxRate = rate
	var evs []lease.Event
	for i := range peers {
		evs = append(evs, lease.Event{Type: lease.Added, Lease: lease.Lease{
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24),
			Attrs:  lease.Attrs{PublicIP: netip.MustParseAddr("198.51.100.2"), BackendType: "vxlan"}}})
	}
	p.Update(evs)
	if p.period != 6*time.Second {
		t.Errorf("period %s for %d peers at most %d a second, want 6s", p.period, peers, rate)
	}
	// On the test's clock: the probes sent in the first 3 s.
	start := time.Now()
	for ms := 0; ms <= 3000; ms += 10 {
		p.tick(start.Add(time.Duration(ms) * time.Millisecond))
	}
	if n := fp.count.Load(); n < 0.8*3*rate || n > 1.2*3*rate {
		t.Errorf("%d probes in 3 s, want about %d (capped at %d a second), not %d", n, 3*rate, rate, 3*peers)
	}
}

// The unreachable warning prints the probe target as an address (it once
// printed its 4 raw bytes: 10.244.10.0 became a newline, 0xf4, a newline
// and a NUL) and names what the backend needs open, not VXLAN's default
// port whatever the backend; a routed backend is told to check routing.
func TestUnreachableWarningNamesTargetAndTransport(t *testing.T) {
	for _, tc := range []struct {
		transport, backend string
		want               []string
	}{
		{"UDP 4789 (VXLAN)", "vxlan", []string{"probes to 10.244.10.0 in a row", "check that UDP 4789 (VXLAN) is open between this node and 198.51.100.20"}},
		{"", "host-gw", []string{"probes to 198.51.100.20 in a row", "check routing and firewalls between this node and 198.51.100.20"}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			logs := tbtest.CaptureLogs(t)
			m := NewMetrics(prometheus.NewRegistry())
			fp := newFakePinger(t, true)
			p := New(20*time.Millisecond, fp, m, tc.transport)
			p.maxRate = 0
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			// Run must be gone before the log capture is undone.
			defer func() { cancel(); <-done }()
			l := vxlanLease("10.244.10.0/24", "198.51.100.20")
			l.Attrs.BackendType = tc.backend
			fp.set(Target(l), true)
			go func() { defer close(done); p.Run(ctx) }()
			p.Update([]lease.Event{{Type: lease.Added, Lease: l}})
			// The warning itself is the fact waited on: the gauge is set
			// before it is written.
			waitFor(t, 2*time.Second, "the unreachable warning", func() bool {
				return len(logs.Matching("10.244.10.0-24", "is unreachable")) > 0
			})
			got := logs.Matching("10.244.10.0-24", "is unreachable")
			if len(got) != 1 {
				t.Fatalf("unreachable logged %d times: %q", len(got), got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got[0], w) {
					t.Errorf("warning %q does not contain %q", got[0], w)
				}
			}
			if strings.ContainsAny(got[0], "\x00\n") || strings.Contains(got[0], "8472") {
				t.Errorf("warning %q has raw bytes or a port the backend does not use", got[0])
			}
		})
	}
}
