// Package peerhealth measures, from inside flanneld, whether every peer is
// reachable through the data path: one small ICMP echo per peer per
// interval (jittered, so that thousands of peers spread out evenly) to the
// peer's overlay address, which for VXLAN travels through the peer's
// encapsulation (a blocked UDP 8472 shows up here). Results go to
// Prometheus; a change of reachability is logged once, not every probe.
package peerhealth

import (
	"container/heap"
	"context"
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
	// window is how many recent probes the loss ratio covers.
	window = 10
	// maxTimeout bounds how long one probe waits for its reply.
	maxTimeout = 2 * time.Second
)

// Pinger is what the prober needs from internal/probe.
type Pinger interface {
	Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) (time.Duration, error)
}

// Metrics are the prober's collectors, labelled by subnet and public_ip.
type Metrics struct {
	Reachable, RTT, Loss *prometheus.GaugeVec
	Probes               *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"subnet", "public_ip"}
	m := &Metrics{
		Reachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_peer_reachable",
			Help: "1 when the peer answered one of its last probes over the overlay, 0 after consecutive losses."}, labels),
		RTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_peer_rtt_seconds",
			Help: "Round-trip time of the last answered overlay probe to the peer."}, labels),
		Loss: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_peer_loss_ratio",
			Help: "Share of the peer's last 10 overlay probes that got no reply."}, labels),
		Probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_peer_probes_total",
			Help: "Overlay probes sent to peers, by result."}, []string{"result"}),
	}
	reg.MustRegister(m.Reachable, m.RTT, m.Loss, m.Probes)
	return m
}

// peer is one remote node's probing state.
type peer struct {
	subnet, publicIP string
	target           netip.Addr
	next             time.Time
	index            int // in the schedule heap; -1 when removed
	results          [window]bool
	n, lost          int // probes recorded; consecutive losses
	unreachable      bool
	// The peer's series, looked up once: a label lookup per probe would
	// cost more than the probe.
	reach, rtt, loss prometheus.Gauge
}

// Prober probes every known peer once per interval.
type Prober struct {
	interval      time.Duration
	pinger        Pinger
	m             *Metrics
	replies, lost prometheus.Counter

	mu    sync.Mutex
	peers map[string]*peer
	due   schedule
	wake  chan struct{}
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
			p.forget(key, old)
		}
		target := Target(ev.Lease)
		if ev.Type == lease.Removed || !target.Is4() {
			continue
		}
		pub := ev.Lease.Attrs.PublicIP.String()
		pe := &peer{subnet: key, publicIP: pub, target: target, next: time.Now().Add(rand.N(p.interval)),
			reach: p.m.Reachable.WithLabelValues(key, pub), rtt: p.m.RTT.WithLabelValues(key, pub), loss: p.m.Loss.WithLabelValues(key, pub)}
		p.peers[key] = pe
		heap.Push(&p.due, pe)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Prober) forget(key string, pe *peer) {
	delete(p.peers, key)
	if pe.index >= 0 {
		heap.Remove(&p.due, pe.index)
	}
	p.m.Reachable.DeleteLabelValues(pe.subnet, pe.publicIP)
	p.m.RTT.DeleteLabelValues(pe.subnet, pe.publicIP)
	p.m.Loss.DeleteLabelValues(pe.subnet, pe.publicIP)
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
	if p.peers[pe.subnet] != pe {
		return // removed or replaced while the probe was out
	}
	p.record(pe, err == nil, rtt)
}

// record updates the peer's metrics and logs a change of reachability.
func (p *Prober) record(pe *peer, ok bool, rtt time.Duration) {
	pe.results[pe.n%window] = ok
	pe.n++
	lostN := 0
	for i := range min(pe.n, window) {
		if !pe.results[i] {
			lostN++
		}
	}
	pe.loss.Set(float64(lostN) / float64(min(pe.n, window)))
	if ok {
		p.replies.Inc()
		pe.rtt.Set(rtt.Seconds())
		pe.lost = 0
		if pe.unreachable {
			klog.Infof("peer %s (%s) is reachable again over the overlay (probe to %s answered in %s)", pe.subnet, pe.publicIP, pe.target, rtt.Round(time.Microsecond))
		}
		pe.unreachable = false
	} else {
		p.lost.Inc()
		pe.lost++
		if pe.lost == lostToUnreachable {
			pe.unreachable = true
			klog.Warningf("peer %s (%s) is unreachable over the overlay: %d probes to %s in a row got no reply; "+
				"check that the backend's port (VXLAN: UDP 8472) is open between this node and %s (run flannelctl doctor)",
				pe.subnet, pe.publicIP, pe.lost, pe.target, pe.publicIP)
		}
	}
	up := 1.0
	if pe.unreachable {
		up = 0
	}
	pe.reach.Set(up)
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
