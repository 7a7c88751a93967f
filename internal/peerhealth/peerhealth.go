// Package peerhealth measures, from inside flanneld, whether every peer is
// reachable through the data path: one small ICMP echo per peer per
// interval (jittered, so that thousands of peers spread out evenly) to the
// peer's overlay address, which for VXLAN travels through the peer's
// encapsulation (a blocked UDP 8472 shows up here). Results go to
// Prometheus, as aggregates over all peers and as per-peer series only for
// the few peers in trouble; a change of reachability is logged once, not
// every probe.
package peerhealth

import (
	"container/heap"
	"context"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/probe"
)

const (
	// lostToUnreachable consecutive lost probes mark a peer unreachable:
	// one lost packet is noise, two in a row at 10 s apart is an outage.
	lostToUnreachable = 2
	// window is how many recent probes the loss ratio covers (at most 16:
	// they are the bits of peer.results).
	window = 10
	// maxTimeout bounds how long one probe waits for its reply: with
	// 10000 peers that do not answer at the default interval, 1000 probes
	// a second times this many seconds are out at any time (a record of
	// 32 bytes here, one of about 100 in the Pinger, no goroutine). An
	// overlay reply later than 1 s is an outage anyway.
	maxTimeout = time.Second
	// probeSize is the probes' payload: room for the Pinger's token.
	probeSize = 16
	// wakeEvery is the shortest sleep of the Run loop: the probes that
	// fall due and expire meanwhile are handled together. Waking for
	// each of 100 probes a second and each expiry cost about 3 % of a core
	// in wake-ups alone; a probe sent or judged lost up to 100 ms late
	// changes nothing.
	wakeEvery = 100 * time.Millisecond
	// maxProbeRate bounds the probes a node sends a second. Up to 1000
	// peers (at the default 10 s) every peer is probed once per interval;
	// beyond, each peer's probes are spaced further apart. A probe costs
	// about 70 µs of CPU: at 10000 peers every 10 s that was a tenth of a
	// core on every node, and 10 million packets a second across the
	// cluster; capped, a peer there is probed every 100 s, and a node that
	// reaches no one still shows it within seconds in the aggregates.
	maxProbeRate = 100
)

// Pinger is what the prober needs from internal/probe: send an echo and
// be called back with its reply, on another goroutine; forget a probe
// whose time is up.
type Pinger interface {
	Send(dst netip.Addr, size int, df bool, onReply func(rtt time.Duration)) (probe.ID, error)
	Cancel(id probe.ID) bool
}

// MaxPeerSeries bounds the peers that have per-peer series at once. Only
// peers in trouble (a lost probe among their last 10) have them: with
// 10000 healthy peers, 30000 series of 1 would cost tens of MiB and tell
// the operator nothing the aggregate gauges do not.
const MaxPeerSeries = 100

// Metrics are the prober's collectors: aggregates over all peers, and
// per-peer series (labelled by subnet and public_ip) for the peers in
// trouble, up to MaxPeerSeries of them.
type Metrics struct {
	Reachable, RTT, Loss *prometheus.GaugeVec
	Probes               *prometheus.CounterVec
	Probed, Unreachable  prometheus.Gauge
	Troubled, Unlabelled prometheus.Gauge
	RTTs                 prometheus.Histogram
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"subnet", "public_ip"}
	m := &Metrics{
		Reachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_peer_reachable",
			Help: "For peers with a lost probe among their last 10 (at most 100 peers): 1 when the peer answered one of its last probes over the overlay, 0 after consecutive losses."}, labels),
		RTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_peer_rtt_seconds",
			Help: "For peers with a lost probe among their last 10: round-trip time of the last answered overlay probe to the peer."}, labels),
		Loss: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_peer_loss_ratio",
			Help: "For peers with a lost probe among their last 10: share of the peer's last 10 overlay probes that got no reply."}, labels),
		Probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_peer_probes_total",
			Help: "Overlay probes sent to peers, by result."}, []string{"result"}),
		Probed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_peers_probed",
			Help: "Peers probed over the overlay."}),
		Unreachable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_peers_unreachable",
			Help: "Peers whose last probes over the overlay were lost (unreachable)."}),
		Troubled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_peers_with_losses",
			Help: "Peers with a lost probe among their last 10."}),
		Unlabelled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_peers_with_losses_unlabelled",
			Help: "Peers with losses that have no per-peer series because 100 others have them already."}),
		RTTs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flannel_peer_probe_rtt_seconds",
			Help:    "Round-trip times of answered overlay probes to all peers.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2}}),
	}
	reg.MustRegister(m.Reachable, m.RTT, m.Loss, m.Probes, m.Probed, m.Unreachable, m.Troubled, m.Unlabelled, m.RTTs)
	return m
}

// peer is one remote node's probing state: 64 bytes, one allocation, the
// key string shared with the map (10000 of them are what a node at scale
// keeps). Times are offsets from the prober's epoch.
type peer struct {
	key         string // lease key, the subnet label
	publicIP    netip.Addr
	next        time.Duration // since epoch
	target      [4]byte       // IPv4 only
	index       int32         // in the schedule heap; -1 when removed
	results     uint16        // the last window probes, one bit each (1 = lost)
	n           uint8         // probes recorded, up to window
	lost        uint8         // consecutive losses, up to lostToUnreachable
	unreachable bool
	troubled    bool // a lost probe among the last window
	labelled    bool // has per-peer series
	gone        bool // removed or replaced: results of its probes out are dropped
}

// Prober probes every known peer once per interval. Its Run loop sends
// the probes and expires them; a probe out is a record in a FIFO (every
// probe waits the same timeout, so send order is deadline order), and its
// reply arrives as a call from the Pinger's reader.
type Prober struct {
	interval, timeout time.Duration
	maxRate           int           // probes a second at most; 0: unbounded
	period            time.Duration // each peer's probe spacing: interval, or more under maxRate
	pinger            Pinger
	m                 *Metrics
	transport         string // what the backend needs open between nodes, e.g. "UDP 8472 (VXLAN)"; "" for routed backends
	replies, lost     prometheus.Counter
	epoch             time.Time

	mu       sync.Mutex
	peers    map[string]*peer
	due      schedule
	out      fifo // probes out, oldest first
	wake     chan struct{}
	troubled int // peers with a loss in their window
	labelled int // of which have per-peer series
}

// New makes a prober; Update tells it the peers and Run probes them.
// transport is what the backend needs open between nodes (see
// backend.Transported), named in the unreachable warning; "" means the
// backend only routes.
func New(interval time.Duration, pinger Pinger, m *Metrics, transport string) *Prober {
	return &Prober{interval: interval, timeout: min(interval, maxTimeout), maxRate: maxProbeRate, period: interval, pinger: pinger, m: m, epoch: time.Now(), transport: transport,
		peers: map[string]*peer{}, wake: make(chan struct{}, 1),
		replies: m.Probes.WithLabelValues("reply"), lost: m.Probes.WithLabelValues("lost")}
}

// Target is the address a peer is probed at: for VXLAN the peer's flannel.N
// address (its subnet's network address), reached only through the
// encapsulation; for route-based backends the peer's public IP, which is
// where their routes lead.
func Target(l lease.Lease) netip.Addr {
	if l.Attrs.BackendType == "vxlan" && l.Subnet.IsValid() {
		return l.Subnet.Addr()
	}
	return l.Attrs.PublicIP
}

// HandleEvents is Update as the daemon's lease set feeds its receivers
// (leaseset.Receiver), the backend's Network among them.
func (p *Prober) HandleEvents(_ context.Context, evs []lease.Event) { p.Update(evs) }

// Update applies a batch of other nodes' lease events.
func (p *Prober) Update(evs []lease.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.since(time.Now())
	var added []*peer
	for _, ev := range evs {
		key := ev.Lease.Key()
		if old, ok := p.peers[key]; ok {
			p.forget(old)
		}
		target := Target(ev.Lease)
		if ev.Type == lease.Removed || !target.Is4() {
			continue
		}
		pe := &peer{key: key, publicIP: ev.Lease.Attrs.PublicIP, target: target.As4()}
		p.peers[key] = pe
		added = append(added, pe)
	}
	p.setPeriod()
	for _, pe := range added {
		pe.next = now + rand.N(p.period)
		heap.Push(&p.due, pe)
	}
	p.m.Probed.Set(float64(len(p.peers)))
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// setPeriod spaces each peer's probes so that all of them together stay
// under maxRate, and says so when that stretches the interval.
func (p *Prober) setPeriod() {
	period := p.interval
	if p.maxRate > 0 {
		period = max(period, time.Duration(len(p.peers))*time.Second/time.Duration(p.maxRate))
	}
	if period != p.period && period > p.interval {
		klog.Infof("peer health: probing each of %d peers every %s, not every %s (at most %d probes a second)", len(p.peers), period.Round(time.Second), p.interval, p.maxRate)
	}
	p.period = period
}

func (p *Prober) forget(pe *peer) {
	delete(p.peers, pe.key)
	pe.gone = true
	if pe.index >= 0 {
		heap.Remove(&p.due, int(pe.index))
	}
	if pe.unreachable {
		p.m.Unreachable.Dec()
	}
	p.setTroubled(pe, false)
}

// since is t as an offset from the prober's epoch (monotonic).
func (p *Prober) since(t time.Time) time.Duration { return t.Sub(p.epoch) }

// Run probes peers as they fall due until ctx ends. It is the only
// goroutine that sends and expires probes; replies come in on the
// Pinger's reader.
func (p *Prober) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer p.stop()
	for {
		timer.Reset(p.tick(time.Now()))
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-timer.C:
		}
	}
}

// tick records a loss for every probe whose time is up, sends the probes
// that are due, and says how long until the next of either.
func (p *Prober) tick(t time.Time) time.Duration {
	now := p.since(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(now)
	p.sendDue(now)
	next := time.Hour
	if p.due.Len() > 0 {
		next = p.due[0].next - now
	}
	if p.out.len() > 0 {
		next = min(next, p.out.front().deadline-now)
	}
	return max(next, wakeEvery)
}

// expire takes the probes whose deadline has come off the FIFO and
// records a loss for each still unanswered.
func (p *Prober) expire(now time.Duration) {
	for p.out.len() > 0 && p.out.front().deadline <= now {
		o := p.out.pop()
		if o.answered {
			continue
		}
		// When Cancel finds the reply already in (it came just now),
		// the loss stands: replied finds the probe gone.
		p.pinger.Cancel(o.id)
		if !o.pe.gone {
			p.record(o.pe, false, 0)
		}
	}
}

// sendDue sends a probe to each peer whose time has come and schedules
// its next probe one period (±10 %) later. A probe the kernel refuses
// (no route, say) is lost at once.
func (p *Prober) sendDue(now time.Duration) {
	for p.due.Len() > 0 && p.due[0].next <= now {
		pe := p.due[0]
		jitter := time.Duration(rand.Int64N(int64(p.period)/5+1)) - p.period/10
		pe.next = now + p.period + jitter
		heap.Fix(&p.due, 0)
		serial := p.out.end()
		id, err := p.pinger.Send(netip.AddrFrom4(pe.target), probeSize, false, func(rtt time.Duration) { p.replied(serial, rtt) })
		if err != nil {
			klog.V(4).Infof("probe of peer %s: %v", pe.key, err)
			p.record(pe, false, 0)
			continue
		}
		p.out.push(inFlight{pe: pe, id: id, deadline: now + p.timeout})
	}
}

// replied records the reply to the probe with the given serial, unless
// that probe timed out already or its peer is gone. It runs on the
// Pinger's reader goroutine.
func (p *Prober) replied(serial uint64, rtt time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.out.at(serial)
	if o == nil || o.answered {
		return
	}
	o.answered = true
	if !o.pe.gone {
		p.record(o.pe, true, rtt)
	}
}

// stop forgets every probe out when Run ends: their replies are dropped.
func (p *Prober) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.out.len() > 0 {
		if o := p.out.pop(); !o.answered {
			p.pinger.Cancel(o.id)
		}
	}
}

// record updates the peer's state and metrics and logs a change of
// reachability.
func (p *Prober) record(pe *peer, ok bool, rtt time.Duration) {
	pe.results <<= 1
	if !ok {
		pe.results |= 1
	}
	pe.results &= 1<<window - 1
	pe.n = min(pe.n+1, window)
	if ok {
		p.replies.Inc()
		p.m.RTTs.Observe(rtt.Seconds())
		pe.lost = 0
		if pe.unreachable {
			pe.unreachable = false
			p.m.Unreachable.Dec()
			klog.Infof("peer %s (%s) is reachable again over the overlay (probe to %s answered in %s)", pe.key, pe.publicIP, pe.targetAddr(), rtt.Round(time.Microsecond))
		}
	} else {
		p.lost.Inc()
		pe.lost = min(pe.lost+1, lostToUnreachable)
		if pe.lost == lostToUnreachable && !pe.unreachable {
			pe.unreachable = true
			p.m.Unreachable.Inc()
			klog.Warningf("peer %s (%s) is unreachable over the overlay: %d probes to %s in a row got no reply; %s (run flannelctl doctor)",
				pe.key, pe.publicIP, pe.lost, pe.targetAddr(), p.checkHint(pe))
		}
	}
	p.setTroubled(pe, pe.results != 0)
	if pe.labelled {
		p.setSeries(pe, ok, rtt)
	}
}

// targetAddr is the probe target as an address: the peer keeps it as
// 4 bytes, which print as raw bytes (a NUL, a newline) with %s.
func (pe *peer) targetAddr() netip.Addr { return netip.AddrFrom4(pe.target) }

// checkHint says what to look at when a peer stops answering.
func (p *Prober) checkHint(pe *peer) string {
	if p.transport == "" {
		return fmt.Sprintf("check routing and firewalls between this node and %s", pe.publicIP)
	}
	return fmt.Sprintf("check that %s is open between this node and %s", p.transport, pe.publicIP)
}

// setTroubled moves a peer into or out of the peers with losses, giving
// it per-peer series while fewer than MaxPeerSeries peers have them.
func (p *Prober) setTroubled(pe *peer, troubled bool) {
	if troubled != pe.troubled {
		pe.troubled = troubled
		if troubled {
			p.troubled++
		} else {
			p.troubled--
		}
	}
	switch {
	case troubled && !pe.labelled && p.labelled < MaxPeerSeries:
		pe.labelled = true
		p.labelled++
	case !troubled && pe.labelled:
		pe.labelled = false
		p.labelled--
		labels := []string{pe.key, pe.publicIP.String()}
		p.m.Reachable.DeleteLabelValues(labels...)
		p.m.RTT.DeleteLabelValues(labels...)
		p.m.Loss.DeleteLabelValues(labels...)
	}
	p.m.Troubled.Set(float64(p.troubled))
	p.m.Unlabelled.Set(float64(p.troubled - p.labelled))
}

// setSeries writes a labelled peer's series.
func (p *Prober) setSeries(pe *peer, ok bool, rtt time.Duration) {
	labels := []string{pe.key, pe.publicIP.String()}
	p.m.Loss.WithLabelValues(labels...).Set(float64(bits.OnesCount16(pe.results)) / float64(pe.n))
	if ok {
		p.m.RTT.WithLabelValues(labels...).Set(rtt.Seconds())
	}
	up := 1.0
	if pe.unreachable {
		up = 0
	}
	p.m.Reachable.WithLabelValues(labels...).Set(up)
}

// schedule is a min-heap of peers by next probe time.
type schedule []*peer

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].next < s[j].next }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = int32(i), int32(j)
}
func (s *schedule) Push(x any) {
	pe := x.(*peer)
	pe.index = int32(len(*s))
	*s = append(*s, pe)
}
func (s *schedule) Pop() any {
	old := *s
	pe := old[len(old)-1]
	pe.index = -1
	*s = old[:len(old)-1]
	return pe
}

// inFlight is one probe out.
type inFlight struct {
	pe       *peer
	id       probe.ID
	deadline time.Duration // since epoch
	answered bool
}

// fifo is the probes out, oldest first, in a ring that grows as needed.
// Each probe has a serial number, fixed when it is pushed: the reply
// callback finds its probe by it, or finds it gone once it has expired.
type fifo struct {
	ring  []inFlight
	head  int    // index in ring of the oldest
	n     int    // probes out
	first uint64 // serial of the oldest
}

func (f *fifo) len() int             { return f.n }
func (f *fifo) end() uint64          { return f.first + uint64(f.n) } // the next push's serial
func (f *fifo) front() *inFlight     { return &f.ring[f.head] }
func (f *fifo) slot(i int) *inFlight { return &f.ring[(f.head+i)%len(f.ring)] }

func (f *fifo) push(o inFlight) {
	if f.n == len(f.ring) {
		grown := make([]inFlight, max(16, 2*len(f.ring)))
		for i := range f.n {
			grown[i] = *f.slot(i)
		}
		f.ring, f.head = grown, 0
	}
	*f.slot(f.n) = o
	f.n++
}

func (f *fifo) pop() inFlight {
	o := *f.front()
	*f.front() = inFlight{} // drop the peer pointer
	f.head = (f.head + 1) % len(f.ring)
	f.n--
	f.first++
	return o
}

// at is the probe with the given serial, nil when it is no longer out.
func (f *fifo) at(serial uint64) *inFlight {
	if serial < f.first || serial >= f.end() {
		return nil
	}
	return f.slot(int(serial - f.first))
}
