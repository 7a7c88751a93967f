package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/nldump"
)

// PeerRoute is the kernel route one peer lease asks for:
// "<Dst> via <Gw> dev <Link>", onlink on a tunnel device whose next hop is
// no neighbour. Comparable, so a change is detected with ==.
type PeerRoute struct {
	Dst    netip.Prefix
	Gw     netip.Addr
	Link   int
	Onlink bool
}

func (r PeerRoute) String() string { return fmt.Sprintf("%s via %s", r.Dst, r.Gw) }

// Netlink is r as netlink writes it.
func (r PeerRoute) Netlink() *netlink.Route {
	nr := &netlink.Route{Dst: IPNet(r.Dst), Gw: net.IP(r.Gw.AsSlice()), LinkIndex: r.Link}
	if r.Onlink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// matches says whether a kernel route is r.
func (r PeerRoute) matches(k netlink.Route) bool {
	gw, ok := netip.AddrFromSlice(k.Gw)
	return ok && k.LinkIndex == r.Link && gw.Unmap() == r.Gw
}

// ErrUnroutable, wrapped in a RouteWriter's Replace error, says the route
// must not be in the kernel now (host-gw: its next hop is off this node's
// segment) and that the writer has taken out any earlier form of it and
// told the operator. The route stays wanted and is tried again at every
// reconcile, but it is no failed write to retry at once.
var ErrUnroutable = errors.New("peer not routable from this node")

// RouteWriter is the kernel side of PeerRoutes, passed in so that the
// engine's logic is tested without root. NetlinkRoutes is the real one.
type RouteWriter interface {
	Replace(r *netlink.Route) error
	// Delete removes r; a route already gone is no error.
	Delete(r *netlink.Route) error
	// Visit calls f for every route of family on link as the dump
	// arrives; f returns false to stop.
	Visit(family, link int, f func(netlink.Route) bool) error
}

// NetlinkRoutes is a RouteWriter on a netlink handle.
type NetlinkRoutes struct{ H *netlink.Handle }

// Replace is `ip route replace`.
func (w NetlinkRoutes) Replace(r *netlink.Route) error { return w.H.RouteReplace(r) }

// Delete is `ip route del`.
func (w NetlinkRoutes) Delete(r *netlink.Route) error {
	if err := w.H.RouteDel(r); err != nil && !IsGone(err) {
		return err
	}
	return nil
}

// Visit reads the routes on link.
func (w NetlinkRoutes) Visit(family, link int, f func(netlink.Route) bool) error {
	return w.H.RouteListFilteredIter(family, &netlink.Route{LinkIndex: link}, netlink.RT_FILTER_OIF, f)
}

// PeerRoutesConfig is what a backend tells its PeerRoutes.
type PeerRoutesConfig struct {
	Name    string // backend name, for logs
	Writer  RouteWriter
	Network netip.Prefix // the cluster network of this family
	// Links names, by index, the devices peer routes go out of; Repair
	// reads them, and prunes flannel-shaped routes on them that no peer
	// wants.
	Links map[int]string
}

// PeerRoutes is the per-peer route engine the route-programming backends
// share: the desired state by lease key, written to the kernel as leases
// come and go, repaired from one dump per link, and read without the
// backend's lock by the healer's notification filter (InLine). Two leases
// may want one destination (a twin lease written under another key, or a
// node re-registered): the newest one's route is wanted, and removing
// either leaves the other's in place. A failed write stays wanted and
// Failed says so, for the backend to kick its healer. All methods but
// InLine must be called under the backend's lock.
type PeerRoutes struct {
	cfg    PeerRoutesConfig
	family int
	own    netip.Prefix
	peers  map[string]keyedRoute
	seq    uint64
	failed bool

	mu   sync.RWMutex // guards want, which InLine reads
	want map[netip.Prefix]PeerRoute
}

type keyedRoute struct {
	r   PeerRoute
	seq uint64 // order of arrival: the newest lease wins a destination
}

// NewPeerRoutes returns an engine with no peers.
func NewPeerRoutes(cfg PeerRoutesConfig) *PeerRoutes {
	family := netlink.FAMILY_V4
	if cfg.Network.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	return &PeerRoutes{cfg: cfg, family: family, peers: map[string]keyedRoute{}, want: map[netip.Prefix]PeerRoute{}}
}

// SetOwn records this node's subnet: a route into it is never stale.
func (p *PeerRoutes) SetOwn(own netip.Prefix) { p.own = own.Masked() }

// Failed says whether a write failed since the last Repair.
func (p *PeerRoutes) Failed() bool { return p.failed }

// Set makes r the route lease key asks for and writes it.
func (p *PeerRoutes) Set(key string, r PeerRoute) {
	old, had := p.peers[key]
	if had && old.r == r {
		return
	}
	p.seq++
	p.peers[key] = keyedRoute{r: r, seq: p.seq}
	p.setWant(r.Dst, r, true)
	installed := p.write(r)
	if had {
		// Replace has normally swapped the old route out already; this
		// catches a kernel that kept both next hops, and a move to
		// another destination.
		p.release(old.r)
	}
	switch {
	case !installed:
	case !had:
		klog.Infof("%s: added route %s", p.cfg.Name, r)
	default:
		klog.Infof("%s: re-routed %s (was %s)", p.cfg.Name, r, old.r)
	}
}

// Remove forgets lease key and deletes its route, unless another current
// lease wants that destination: then that lease's route is put back.
func (p *PeerRoutes) Remove(key string) {
	old, had := p.peers[key]
	if !had {
		return
	}
	delete(p.peers, key)
	p.release(old.r)
	klog.Infof("%s: removed route %s", p.cfg.Name, old.r)
}

// release takes old out of the kernel: the destination goes to the
// newest current lease wanting it, or out of the desired state.
func (p *PeerRoutes) release(old PeerRoute) {
	var next keyedRoute
	for _, k := range p.peers {
		if k.r.Dst == old.Dst && k.seq > next.seq {
			next = k
		}
	}
	if next.seq == 0 {
		p.setWant(old.Dst, PeerRoute{}, false)
		p.delete(old.Netlink())
		return
	}
	if next.r == old {
		return
	}
	p.delete(old.Netlink())
	p.setWant(old.Dst, next.r, true)
	p.write(next.r)
}

func (p *PeerRoutes) setWant(dst netip.Prefix, r PeerRoute, want bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if want {
		p.want[dst] = r
	} else {
		delete(p.want, dst)
	}
}

// write puts r in the kernel and says whether it is in place.
func (p *PeerRoutes) write(r PeerRoute) bool {
	err := p.cfg.Writer.Replace(r.Netlink())
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrUnroutable):
	default:
		klog.Errorf("%s: ip route replace %s dev %s: %v (retrying with back-off)", p.cfg.Name, r, p.linkName(r.Link), err)
		p.failed = true
	}
	return false
}

func (p *PeerRoutes) delete(r *netlink.Route) {
	if err := p.cfg.Writer.Delete(r); err != nil {
		klog.Errorf("%s: ip route del %s via %s dev %s: %v", p.cfg.Name, r.Dst, r.Gw, p.linkName(r.LinkIndex), err)
	}
}

func (p *PeerRoutes) linkName(index int) string {
	if name, ok := p.cfg.Links[index]; ok {
		return name
	}
	return fmt.Sprintf("#%d", index)
}

// Repair reads the routes on the engine's links once, restores every
// wanted route that is missing or different and counts it in r; with
// prune (once the first full batch of leases is applied) it deletes the
// flannel-shaped routes into the network that no lease wants, left by an
// earlier run for leases that expired meanwhile or added by hand. The cost
// is one dump and one map lookup per kernel route.
func (p *PeerRoutes) Repair(r Repairs, prune bool) error {
	p.failed = false
	in := make(map[netip.Prefix]bool, len(p.want))
	var stale []netlink.Route
	err := nldump.Visit(func() { clear(in); stale = stale[:0] }, func() error {
		for link := range p.cfg.Links {
			if err := p.cfg.Writer.Visit(p.family, link, func(k netlink.Route) bool {
				p.sort(k, in, &stale, prune)
				return true
			}); err != nil {
				return fmt.Errorf("list routes on %s: %w", p.linkName(link), err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range stale {
		klog.Infof("%s: removing stale route %s via %s", p.cfg.Name, stale[i].Dst, stale[i].Gw)
		p.delete(&stale[i])
	}
	for dst, want := range p.want {
		if !in[dst] && p.write(want) {
			klog.Infof("%s: restored route %s", p.cfg.Name, want)
			r.Add("route")
		}
	}
	if p.failed {
		return fmt.Errorf("some %s routes could not be installed", p.cfg.Network)
	}
	return nil
}

// sort files one kernel route: as wanted (in), stale, or none of ours.
func (p *PeerRoutes) sort(k netlink.Route, in map[netip.Prefix]bool, stale *[]netlink.Route, prune bool) {
	dst, ok := PrefixOf(k.Dst)
	if !ok {
		return
	}
	want, wanted := p.want[dst]
	switch {
	case wanted && want.matches(k):
		in[dst] = true
	case wanted, !prune, dst.Masked() == p.own:
	default:
		if _, shaped := FlannelShaped(k, p.cfg.Network); shaped {
			*stale = append(*stale, k)
		}
	}
}

// InLine says whether a route notification leaves the kernel as the peers
// want it: a route added in the form a peer wants, or one deleted whose
// destination no peer wants (typically the echo of the engine's own
// write). Anything else is drift for the healer. Safe to call at any time.
func (p *PeerRoutes) InLine(u netlink.RouteUpdate) bool {
	dst, ok := PrefixOf(u.Dst)
	if !ok || u.Table != unix.RT_TABLE_MAIN {
		return false
	}
	p.mu.RLock()
	want, wanted := p.want[dst]
	p.mu.RUnlock()
	if u.Type == unix.RTM_DELROUTE {
		return !wanted
	}
	return wanted && want.matches(u.Route)
}

// Peers is the rest of the skeleton a route-programming backend shares:
// the lock over its PeerRoutes (one per address family), the prune after
// the first (complete) batch of leases, the healer's kick after a failed
// write, and the healer itself. A backend supplies the route each lease
// asks for (its handle function) and, when it has one, a check to run
// before every repair.
type Peers struct {
	name   string
	routes []*PeerRoutes
	check  func() error
	kick   Kicker
	owned  *Owned

	mu     sync.Mutex
	synced bool
}

// PeersConfig is what a backend tells its Peers.
type PeersConfig struct {
	Name   string // backend name, for logs
	Routes []*PeerRoutes
	// Owned is what the healer watches besides the routes (devices, the
	// external interface); its Networks and RouteInLine are filled in.
	Owned *Owned
	// Check, when set, runs before every repair; an error is the
	// reconcile's (host-gw: the external interface is down).
	Check func() error
}

// NewPeers returns the skeleton over cfg.Routes.
func NewPeers(cfg PeersConfig) *Peers {
	p := &Peers{name: cfg.Name, routes: cfg.Routes, check: cfg.Check, kick: NewKicker(), owned: cfg.Owned}
	if p.owned == nil {
		p.owned = &Owned{}
	}
	for _, r := range p.routes {
		p.owned.Networks = append(p.owned.Networks, r.cfg.Network)
	}
	p.owned.RouteInLine = p.inLine
	return p
}

// Locked runs fn under the lock that guards the routes.
func (p *Peers) Locked(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fn()
}

// Apply hands every event to handle, under the lock. After the first
// batch (the full set of leases) routes no lease accounts for are left
// from an earlier run and removed. A failed write kicks the healer.
func (p *Peers) Apply(events []lease.Event, handle func(lease.Event)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range events {
		handle(ev)
	}
	if !p.synced {
		p.synced = true
		for _, r := range p.routes {
			if err := r.Repair(Repairs{}, true); err != nil {
				klog.Errorf("%s: routes into %s left from an earlier run are not cleaned up: %v", p.name, r.cfg.Network, err)
			}
		}
	}
	for _, r := range p.routes {
		if r.Failed() {
			p.kick.Kick()
			return
		}
	}
}

// Heal keeps every peer's route in place, watching namespace ns (nil: the
// current one); see Healer.
func (p *Peers) Heal(ctx context.Context, cfg HealConfig, ns *netns.NsHandle) {
	RunHealer(ctx, HealLoop{
		Name: p.name, NS: ns, Config: cfg, Reconcile: p.reconcile, Kick: p.kick,
		Owned: func() *Owned { return p.owned },
	})
}

// reconcile restores missing routes and, once the leases are known,
// removes routes no lease accounts for.
func (p *Peers) reconcile() (Repairs, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := Repairs{}
	if p.check != nil {
		if err := p.check(); err != nil {
			return r, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	var errs []error
	for _, routes := range p.routes {
		if err := routes.Repair(r, p.synced); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return r, errors.Join(errs...)
}

// inLine asks the PeerRoutes of the notification's family.
func (p *Peers) inLine(u netlink.RouteUpdate) bool {
	dst, ok := PrefixOf(u.Dst)
	if !ok {
		return false
	}
	for _, r := range p.routes {
		if r.cfg.Network.Addr().Is6() == dst.Addr().Is6() {
			return r.InLine(u)
		}
	}
	return false
}
