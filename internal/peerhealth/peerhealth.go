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
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
)

const (
	// lostToUnreachable consecutive lost probes mark a peer unreachable:
	// one lost packet is noise, two in a row at 10 s apart is an outage.
	lostToUnreachable = 2
	// window is how many recent probes the loss ratio covers (at most 16:
	// they are the bits of peer.results).
	window = 10
	// maxTimeout bounds how long one probe waits for its reply. Each
	// probe out waits in a goroutine: with 10000 peers that do not answer
	// at the default interval, 1000 probes a second times this many
	// seconds are waiting at any time. An overlay reply later than 1 s is
	// an outage anyway.
	maxTimeout = time.Second
)

// Pinger is what the prober needs from internal/probe.
type Pinger interface {
	Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) (time.Duration, error)
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

// peer is one remote node's probing state.
type peer struct {
	key         string // lease key, the subnet label
	publicIP    netip.Addr
	target      netip.Addr
	next        time.Time
	index       int    // in the schedule heap; -1 when removed
	results     uint16 // the last window probes, one bit each (1 = lost)
	n           uint8  // probes recorded, up to window
	lost        uint8  // consecutive losses, up to lostToUnreachable
	unreachable bool
	troubled    bool // a lost probe among the last window
	labelled    bool // has per-peer series
}

// Prober probes every known peer once per interval.
type Prober struct {
	interval      time.Duration
	pinger        Pinger
	m             *Metrics
	replies, lost prometheus.Counter

	mu       sync.Mutex
	peers    map[string]*peer
	due      schedule
	wake     chan struct{}
	troubled int // peers with a loss in their window
	labelled int // of which have per-peer series
}

// New makes a prober; Update tells it the peers and Run probes them.
func New(interval time.Duration, pinger Pinger, m *Metrics) *Prober {
	return &Prober{interval: interval, pinger: pinger, m: m, peers: map[string]*peer{}, wake: make(chan struct{}, 1),
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

// Update applies a batch of other nodes' lease events.
func (p *Prober) Update(evs []lease.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range evs {
		key := ev.Lease.Key()
		if old, ok := p.peers[key]; ok {
			p.forget(old)
		}
		target := Target(ev.Lease)
		if ev.Type == lease.Removed || !target.Is4() {
			continue
		}
		pe := &peer{key: key, publicIP: ev.Lease.Attrs.PublicIP, target: target, next: time.Now().Add(rand.N(p.interval))}
		p.peers[key] = pe
		heap.Push(&p.due, pe)
	}
	p.m.Probed.Set(float64(len(p.peers)))
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Prober) forget(pe *peer) {
	delete(p.peers, pe.key)
	if pe.index >= 0 {
		heap.Remove(&p.due, pe.index)
	}
	if pe.unreachable {
		p.m.Unreachable.Dec()
	}
	p.setTroubled(pe, false)
}

// Run probes peers as they fall due until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for _, pe := range p.takeDue(time.Now()) {
			go p.probe(ctx, pe)
		}
		timer.Reset(p.untilNext())
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-timer.C:
		}
	}
}

// takeDue pops the peers whose time has come and schedules their next
// probe one interval (±10 %) later.
func (p *Prober) takeDue(now time.Time) []*peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*peer
	for p.due.Len() > 0 && !p.due[0].next.After(now) {
		pe := p.due[0]
		out = append(out, pe)
		jitter := time.Duration(rand.Int64N(int64(p.interval)/5+1)) - p.interval/10
		pe.next = now.Add(p.interval + jitter)
		heap.Fix(&p.due, 0)
	}
	return out
}

func (p *Prober) untilNext() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.due.Len() == 0 {
		return time.Hour
	}
	return max(time.Until(p.due[0].next), time.Millisecond)
}

func (p *Prober) probe(ctx context.Context, pe *peer) {
	rtt, err := p.pinger.Ping(ctx, pe.target, 16, false, min(p.interval, maxTimeout))
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peers[pe.key] != pe {
		return // removed or replaced while the probe was out
	}
	p.record(pe, err == nil, rtt)
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
			klog.Infof("peer %s (%s) is reachable again over the overlay (probe to %s answered in %s)", pe.key, pe.publicIP, pe.target, rtt.Round(time.Microsecond))
		}
	} else {
		p.lost.Inc()
		pe.lost = min(pe.lost+1, lostToUnreachable)
		if pe.lost == lostToUnreachable && !pe.unreachable {
			pe.unreachable = true
			p.m.Unreachable.Inc()
			klog.Warningf("peer %s (%s) is unreachable over the overlay: %d probes to %s in a row got no reply; "+
				"check that the backend's port (VXLAN: UDP 8472) is open between this node and %s (run flannelctl doctor)",
				pe.key, pe.publicIP, pe.lost, pe.target, pe.publicIP)
		}
	}
	p.setTroubled(pe, pe.results != 0)
	if pe.labelled {
		p.setSeries(pe, ok, rtt)
	}
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
func (s schedule) Less(i, j int) bool { return s[i].next.Before(s[j].next) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	pe := x.(*peer)
	pe.index = len(*s)
	*s = append(*s, pe)
}
func (s *schedule) Pop() any {
	old := *s
	pe := old[len(old)-1]
	pe.index = -1
	*s = old[:len(old)-1]
	return pe
}
