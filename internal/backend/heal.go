package backend

import (
	"context"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/pace"
)

// DefaultReconcileInterval is how often a Healer compares the whole kernel
// state with the current leases when no netlink event asked it to sooner.
const DefaultReconcileInterval = 30 * time.Second

// Healer is an optional part of a Network: one that keeps the kernel state
// it owns (devices, addresses, routes, neighbours, FDB entries) in line with
// the current leases by itself, repairing drift as soon as the kernel
// reports it and at a fixed interval for anything a notification missed.
// The daemon starts Heal once, after Activate, in its own goroutine; Heal
// returns when ctx ends. A backend with nothing the kernel could lose
// (alloc), or one that repairs itself another way, simply does not
// implement it; one whose state can drift implements it most easily with
// RunHealer and a reconcile function.
type Healer interface {
	Heal(ctx context.Context, cfg HealConfig)
}

// HealConfig is what the daemon hands a Healer.
type HealConfig struct {
	// Interval between full reconciles; 0 means DefaultReconcileInterval.
	Interval time.Duration
	// Report counts repairs and failed reconciles (Prometheus in flanneld);
	// nil counts nothing.
	Report RepairReporter
}

// RepairReporter counts what a Healer did.
type RepairReporter interface {
	// Repaired counts n kernel objects of one kind ("device", "address",
	// "route", "neighbour", "fdb") found missing or wrong and restored.
	Repaired(kind string, n int)
	// ReconcileFailed counts a reconcile that could not finish; it is
	// retried with back-off.
	ReconcileFailed()
}

// Repairs counts restored kernel objects by kind during one reconcile.
type Repairs map[string]int

// Add counts one repair of kind.
func (r Repairs) Add(kind string) { r[kind]++ }

func (r Repairs) String() string {
	kinds := make([]string, 0, len(r))
	for k, n := range r {
		kinds = append(kinds, k+"="+strconv.Itoa(n))
	}
	sort.Strings(kinds)
	return strings.Join(kinds, " ")
}

// Owned names the kernel objects a network cares about, so that netlink
// notifications about anything else (pods' veths, ARP on the underlay) do
// not wake the reconciler.
type Owned struct {
	Devices  map[int]bool    // the network's own devices by index (flannel.1)
	Names    map[string]bool // the same by name, to notice a device being re-created
	Ext      int             // the external interface's index
	Networks []netip.Prefix  // cluster networks: routes into them are ours to watch
	// RouteInLine and NeighInLine, when set, say whether a notification
	// about a watched route or neighbour/FDB entry leaves the kernel as
	// the network wants it (typically the echo of the network's own
	// write): such a notification wakes no reconcile. Without them, every
	// peer the network programs would set off a full reconcile, which at
	// thousands of peers re-reads the whole kernel state per lease.
	// Called for every notification: they must not wait for the
	// network's lock.
	RouteInLine func(netlink.RouteUpdate) bool
	NeighInLine func(netlink.NeighUpdate) bool
}

// HealLoop is a Healer's moving parts, for RunHealer.
type HealLoop struct {
	Name   string          // backend name, for logs
	NS     *netns.NsHandle // namespace to watch; nil for the current one
	Config HealConfig
	// Owned returns what to watch now; it is called for every netlink
	// notification, so it must not block (read an atomic snapshot).
	Owned func() *Owned
	// Reconcile makes the kernel match the desired state and says what it
	// had to repair. An error schedules a retry with back-off.
	Reconcile func() (Repairs, error)
	// Kick, when the network kicks it, asks for a reconcile at once (a
	// failed write while handling lease events).
	Kick Kicker
}

// Kicker asks a healer for a reconcile at once. Kicks while one is still
// pending merge into it, and kicking never blocks the caller.
type Kicker chan struct{}

// NewKicker returns a Kicker that holds one pending kick.
func NewKicker() Kicker { return make(Kicker, 1) }

// Kick asks for a reconcile unless one is already pending.
func (k Kicker) Kick() {
	select {
	case k <- struct{}{}:
	default:
	}
}

// RunHealer reconciles when a relevant netlink notification arrives, when
// Kick fires, every Interval, and with back-off after a failure, until ctx
// ends.
func RunHealer(ctx context.Context, l HealLoop) {
	interval := l.Config.Interval
	if interval <= 0 {
		interval = DefaultReconcileInterval
	}
	wake := make(chan struct{}, 1)
	go watchKernel(ctx, l, wake)
	tick := pace.NewTicker(interval, 0.1)
	defer tick.Stop()
	b := pace.New(pace.Policy{Min: 100 * time.Millisecond, Max: min(interval, 10*time.Second)})
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
			// Let a teardown in progress (ip link del) finish first.
			time.Sleep(10 * time.Millisecond)
		case <-l.Kick:
		case <-tick.C():
		case <-retry:
		}
		retry = nil
		err := runOnce(l)
		// Every reconcile is a full one: the periodic one counts from
		// the last, whatever woke it.
		tick.Next()
		if err != nil {
			wait := b.Next()
			klog.Errorf("%s: reconcile kernel state: %v (retrying in %s)", l.Name, err, wait)
			retry = time.After(wait)
			continue
		}
		b.Reset()
	}
}

func runOnce(l HealLoop) error {
	repairs, err := l.Reconcile()
	if l.Config.Report != nil {
		for kind, n := range repairs {
			l.Config.Report.Repaired(kind, n)
		}
		if err != nil {
			l.Config.Report.ReconcileFailed()
		}
	}
	if len(repairs) > 0 {
		klog.Infof("%s: repaired kernel state that drifted from the leases: %s", l.Name, repairs)
	}
	return err
}

func poke(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// watchKernel subscribes to link, address, route and neighbour
// notifications and pokes wake for those about owned objects. A
// subscription that breaks (the socket overflowed) is renewed, and a
// reconcile is asked for, since notifications were lost.
func watchKernel(ctx context.Context, l HealLoop, wake chan<- struct{}) {
	// A subscription that lived a minute was healthy: its end starts the
	// back-off afresh.
	b := pace.New(pace.Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2, Stable: time.Minute})
	for ctx.Err() == nil {
		started := time.Now()
		done := make(chan struct{})
		ended := make(chan string, 4)
		if err := subscribe(l, wake, done, ended); err != nil {
			klog.Errorf("%s: subscribe to netlink notifications: %v; relying on the periodic reconcile until it works", l.Name, err)
		} else {
			poke(wake)
			select {
			case <-ctx.Done():
			case what := <-ended:
				klog.Warningf("%s: netlink %s notifications stopped; subscribing again", l.Name, what)
			}
		}
		close(done)
		b.Settled(time.Since(started))
		_ = b.Sleep(ctx)
	}
}

// notifyBuffer is the kernel receive buffer of the route and neighbour
// subscriptions: programming thousands of peers at start-up sends tens of
// thousands of notifications in a burst, which overflowed the default
// (about 200 KiB) under load; each overflow costs a re-subscription and a
// full reconcile. Kernel memory, used only while notifications queue.
const notifyBuffer = 8 << 20

func subscribe(l HealLoop, wake chan<- struct{}, done chan struct{}, ended chan<- string) error {
	ns := l.NS
	if ns == nil {
		none := netns.None()
		ns = &none
	}
	onErr := func(err error) { klog.V(1).Infof("%s: netlink notification: %v", l.Name, err) }
	links, addrs := make(chan netlink.LinkUpdate, 64), make(chan netlink.AddrUpdate, 64)
	routes, neighs := make(chan netlink.RouteUpdate, 256), make(chan netlink.NeighUpdate, 256)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		return err
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		return err
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: ns, ErrorCallback: onErr,
		ReceiveBufferSize: notifyBuffer, ReceiveBufferForceSize: true}); err != nil {
		return err
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: ns, ErrorCallback: onErr,
		ReceiveBufferSize: notifyBuffer, ReceiveBufferForceSize: true}); err != nil {
		return err
	}
	go relay(links, "link", ended, wake, func(u netlink.LinkUpdate) bool { return l.Owned().link(u) })
	go relay(addrs, "address", ended, wake, func(u netlink.AddrUpdate) bool { return l.Owned().addr(u) })
	go relay(routes, "route", ended, wake, func(u netlink.RouteUpdate) bool { return l.Owned().route(u) })
	go relay(neighs, "neighbour", ended, wake, func(u netlink.NeighUpdate) bool { return l.Owned().neigh(u) })
	return nil
}

func relay[T any](ch <-chan T, what string, ended chan<- string, wake chan<- struct{}, relevant func(T) bool) {
	for u := range ch {
		if relevant(u) {
			poke(wake)
		}
	}
	ended <- what
}

func (o *Owned) link(u netlink.LinkUpdate) bool {
	i := int(u.Index)
	return o.Devices[i] || i == o.Ext || (u.Link != nil && o.Names[u.Link.Attrs().Name])
}

// addr passes changes of the owned devices' addresses, except the IPv6
// link-local ones the kernel adds by itself when a device comes up (its
// duplicate address detection ends a second or two later): flannel sets
// none of them.
func (o *Owned) addr(u netlink.AddrUpdate) bool {
	if u.LinkAddress.IP.IsLinkLocalUnicast() {
		return false
	}
	return o.Devices[u.LinkIndex] || u.LinkIndex == o.Ext
}

func (o *Owned) route(u netlink.RouteUpdate) bool {
	return o.watchedRoute(u) && (o.RouteInLine == nil || !o.RouteInLine(u))
}

// watchedRoute passes routes of the main table on the owned devices or
// into the networks; the local table's (the kernel's own, for each
// address) follow the addresses.
func (o *Owned) watchedRoute(u netlink.RouteUpdate) bool {
	if u.Table != unix.RT_TABLE_MAIN {
		return false
	}
	if o.Devices[u.LinkIndex] {
		return true
	}
	dst, ok := ipnet.Prefix(u.Dst)
	if !ok {
		return false
	}
	for _, n := range o.Networks {
		if n.IsValid() && n.Overlaps(dst) {
			return true
		}
	}
	return false
}

func (o *Owned) neigh(u netlink.NeighUpdate) bool {
	return o.Devices[u.LinkIndex] && (o.NeighInLine == nil || !o.NeighInLine(u))
}
