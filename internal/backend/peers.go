package backend

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netns"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
)

// PeerEngine is a PeerSet of any peer type, as Peers drives it.
type PeerEngine interface {
	Repair(r Repairs, prune bool) error
	Failed() bool
	Len() int
	quiet(bool)
}

func (s *PeerSet[P]) quiet(q bool) {
	s.Log = klog.V(0)
	if q {
		s.Log = klog.V(2)
	}
}

// Peers is the rest of the skeleton every peer-programming backend
// shares: the lock over its PeerSets (one per address family or device),
// the prune after the first (complete) batch of leases, the healer's kick
// after a failed write, and the healer itself. A backend supplies what
// each lease asks for (its handle function), what the healer watches, and
// when it has one, a check that repairs what the peers' entries rest on
// (a device) before every repair.
type Peers struct {
	name  string
	sets  []PeerEngine
	check func(Repairs) error
	owned func() *Owned
	kick  Kicker
	cur   atomic.Pointer[Owned]

	mu     sync.Mutex
	synced bool
}

// PeersConfig is what a backend tells its Peers.
type PeersConfig struct {
	Name string // backend name, for logs
	Sets []PeerEngine
	// Owned says what the healer watches (devices, the external
	// interface, the networks) and which notifications are in line with
	// the peers (RouteInLine, NeighInLine). It is called under the lock
	// at the start and after every reconcile, since a re-created device
	// has a new index.
	Owned func() *Owned
	// Check, when set, runs under the lock before every repair: it
	// restores what the peers' entries rest on, counting in r; an error is
	// the reconcile's (host-gw: the external interface is down).
	Check func(r Repairs) error
}

// NewPeers returns the skeleton over cfg.Sets.
func NewPeers(cfg PeersConfig) *Peers {
	p := &Peers{name: cfg.Name, sets: cfg.Sets, check: cfg.Check, owned: cfg.Owned, kick: NewKicker()}
	if p.owned == nil {
		p.owned = func() *Owned { return &Owned{Ext: -1} }
	}
	p.cur.Store(p.owned())
	return p
}

// Locked runs fn under the lock that guards the peers.
func (p *Peers) Locked(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fn()
}

// Kick asks the healer for a reconcile now: the backend learnt of drift
// that no netlink notification reports.
func (p *Peers) Kick() { p.kick.Kick() }

// perPeerLogMax is the largest batch whose peers are each logged at level
// 0: at start-up with 10000 peers, a line per peer cost about 0.1 s of the
// convergence and buried everything else in the log.
const perPeerLogMax = 100

// Apply hands every event to handle, under the lock. After the first
// batch (the full set of leases) entries no lease accounts for are left
// from an earlier run and removed. A failed write kicks the healer.
func (p *Peers) Apply(events []lease.Event, handle func(lease.Event)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	big := len(events) > perPeerLogMax
	for _, s := range p.sets {
		s.quiet(big)
	}
	for _, ev := range events {
		handle(ev)
	}
	if big {
		n := 0
		for _, s := range p.sets {
			n = max(n, s.Len())
		}
		klog.Infof("%s: applied %d lease events; %d peers programmed (each peer's line at -v=2)", p.name, len(events), n)
	}
	if !p.synced {
		p.synced = true
		for _, s := range p.sets {
			if err := s.Repair(Repairs{}, true); err != nil {
				klog.Errorf("%s: kernel state left from an earlier run is not cleaned up: %v", p.name, err)
			}
		}
	}
	for _, s := range p.sets {
		if s.Failed() {
			p.kick.Kick()
			return
		}
	}
}

// Heal keeps every peer's entries in place, watching namespace ns (nil:
// the current one); see Healer.
func (p *Peers) Heal(ctx context.Context, cfg HealConfig, ns *netns.NsHandle) {
	RunHealer(ctx, p.Loop(cfg, ns))
}

// Loop is the healer's moving parts, for Heal (and for a test that counts
// the reconciles).
func (p *Peers) Loop(cfg HealConfig, ns *netns.NsHandle) HealLoop {
	return HealLoop{Name: p.name, NS: ns, Config: cfg, Reconcile: p.reconcile, Kick: p.kick, Owned: p.cur.Load}
}

// reconcile restores what the peers rest on, then their missing entries,
// and once the leases are known removes entries no lease accounts for.
func (p *Peers) reconcile() (Repairs, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := Repairs{}
	defer func() { p.cur.Store(p.owned()) }()
	if p.check != nil {
		if err := p.check(r); err != nil {
			return r, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	var errs []error
	for _, s := range p.sets {
		if err := s.Repair(r, p.synced); err != nil {
			errs = append(errs, err)
		}
	}
	return r, errors.Join(errs...)
}
