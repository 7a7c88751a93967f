// Package leaseset is the daemon's one record of other nodes' leases. Every
// lease the datastore reports lives here once, with the attributes it was
// last reported with and the guard's verdict on it; the backends are fed
// from it.
//
// The guard is part of the record because a lease is data any writer of the
// datastore controls: one bad lease (a subnet on the underlay, a loopback
// public address, the node's own address) would otherwise become a route or
// FDB entry that cuts the node off from its cluster. The set refuses such
// leases by name and turns a good lease that turns bad into a removal, so
// the backend drops what it programmed for it.
//
// Because the set keeps the attributes of every lease, the events it hands
// on carry them for removals as for additions, whatever the datastore said:
// a subnet manager may name a removed lease by its subnets alone
// (subnet.Manager.WatchLeases).
package leaseset

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// Reasons a lease is refused: the label values of
// flannel_leases_rejected_total.
const (
	OutsideNetwork = "outside-network" // a subnet is not inside the cluster network
	OverlapsOwn    = "overlaps-own"    // a subnet overlaps this node's own subnet
	OverlapsLease  = "overlaps-lease"  // a subnet overlaps another node's programmed lease
	OverlapsHost   = "overlaps-host"   // a subnet overlaps an address or route the daemon does not own
	BadPublicIP    = "bad-public-ip"   // unset, loopback, multicast, link-local or broadcast
	OwnPublicIP    = "own-public-ip"   // this node's own address for another subnet
	MissingSubnet  = "missing-subnet"  // no subnet of a family the network enables
)

// Rejection names a refused lease and why.
type Rejection struct {
	Key    string
	Reason string // one of the constants above
	Why    string // the facts, for the operator
}

func (r Rejection) String() string {
	return fmt.Sprintf("refusing lease %s (%s): %s", r.Key, r.Reason, r.Why)
}

// HostPrefix is an address or route the node has, described for a log line.
type HostPrefix struct {
	Prefix    netip.Prefix
	Route     bool   // a route (else an address)
	Connected bool   // a route the kernel made for an address (proto kernel)
	What      string // e.g. "route 198.51.100.0/24 dev eth0"
}

// Host lists the node's addresses and routes that the daemon does not own
// (not on flannel's own devices): WatchedHost in flanneld.
type Host interface {
	Prefixes() ([]HostPrefix, error)
}

// Receiver is what the set feeds: the backend's Network, the peer prober.
// Events never include the node's own lease, and always carry the lease's
// subnets and attributes; a Removed event carries those the receiver was
// last given for the lease.
type Receiver interface {
	HandleEvents(ctx context.Context, events []lease.Event)
}

// Set holds every other node's lease that the datastore reported, by key.
// Not safe for concurrent use: the daemon's follow loop owns it.
type Set struct {
	v4, v6 netip.Prefix // the cluster networks; invalid when disabled
	own    *lease.Lease
	host   Host
	leases map[string]entry

	// index finds accepted subnets by prefix and lens counts their
	// lengths, so that checking a lease against thousands of accepted ones
	// is a few map lookups, not a scan of all of them per event.
	index    map[netip.Prefix]string // masked subnet -> lease key
	lens     map[prefixLen]int
	accepted int
}

// entry is one lease: its attributes (the subnets are in the key) and the
// verdict. It fits a map slot (128 bytes): a second set of attributes per
// lease, as the watcher, the daemon and the guard each kept one, cost
// megabytes at 10000 peers.
type entry struct {
	attrs lease.Attrs
	note  *note // nil for an accepted lease whose key parses back to its subnets
	twin  bool  // reported for advertising this node's public address
}

// note is what few leases need: a refusal, or subnets the key does not
// give back (an unmasked subnet, which no subnet manager hands out).
type note struct {
	refusal string // reason and facts last reported; "" while accepted
	v4, v6  netip.Prefix
	odd     bool
}

func (e *entry) refused() bool { return e.note != nil && e.note.refusal != "" }

type prefixLen struct {
	v6   bool
	bits int
}

// New builds the set for the network cfg, this node's lease own and the
// node's addresses and routes host.
func New(cfg *config.Config, own *lease.Lease, host Host) *Set {
	s := &Set{own: own, host: host, leases: map[string]entry{}, index: map[netip.Prefix]string{}, lens: map[prefixLen]int{}}
	if cfg.EnableIPv4 {
		s.v4 = cfg.Network
	}
	if cfg.EnableIPv6 {
		s.v6 = cfg.IPv6Network
	}
	return s
}

// Len is the number of other nodes' leases the datastore holds, refused
// ones included.
func (s *Set) Len() int { return len(s.leases) }

// Accepted is the number of leases let through and not removed since:
// those the backend programs.
func (s *Set) Accepted() int { return s.accepted }

// Outcome is what one Apply did, for the daemon's metrics and log.
type Outcome struct {
	Applied  []lease.Event // what the receivers were given
	Rejected []Rejection   // refusals not reported before (each distinct refusal of a key once)
	HostErr  error         // the node's addresses could not be read: the host check was skipped
}

// Apply folds a batch of other nodes' lease events into the set and hands
// the receivers, in order, what they must program or remove; they are
// called even when that is nothing, since the first batch tells them the
// peers are complete. snapshot marks the full current set of a
// re-established watch: leases missing from it are removed first.
func (s *Set) Apply(ctx context.Context, batch []lease.Event, snapshot bool, to ...Receiver) Outcome {
	o := Outcome{Applied: make([]lease.Event, 0, len(batch))}
	if snapshot {
		for _, key := range s.vanished(batch) {
			s.remove(key, &o)
		}
	}
	host, hostErr := s.hostPrefixes()
	o.HostErr = hostErr
	for i := range batch {
		if batch[i].Type == lease.Removed {
			s.remove(batch[i].Lease.Key(), &o)
		} else {
			s.add(&batch[i].Lease, host, &o)
		}
	}
	for _, r := range to {
		r.HandleEvents(ctx, o.Applied)
	}
	return o
}

// vanished lists the keys the set holds that a snapshot lacks.
func (s *Set) vanished(snapshot []lease.Event) []string {
	present := make(map[string]struct{}, len(snapshot))
	for _, ev := range snapshot {
		if ev.Type != lease.Removed {
			present[ev.Lease.Key()] = struct{}{}
		}
	}
	var out []string
	for key := range s.leases {
		if _, ok := present[key]; !ok {
			out = append(out, key)
		}
	}
	return out
}

// remove forgets key; the receivers hear of it if they had been given it.
func (s *Set) remove(key string, o *Outcome) {
	e, ok := s.leases[key]
	if !ok {
		return
	}
	delete(s.leases, key)
	if !e.refused() {
		o.Applied = append(o.Applied, lease.Event{Type: lease.Removed, Lease: s.unaccept(key, &e)})
	}
}

// add records l and its verdict. A lease refused after having been
// accepted becomes a removal of what the receivers were given.
func (s *Set) add(l *lease.Lease, host []HostPrefix, o *Outcome) {
	key := l.Key()
	e, had := s.leases[key]
	wasAccepted := had && !e.refused()
	var given lease.Lease
	if wasAccepted {
		given = s.unaccept(key, &e) // accepted again below if still good
	}
	s.noteTwin(key, l, &e)
	e.attrs = l.Attrs
	r, bad := s.check(l, host)
	if !bad {
		e.note = noteFor(key, l, "")
		s.leases[key] = e
		s.accept(key, l)
		o.Applied = append(o.Applied, lease.Event{Type: lease.Added, Lease: *l})
		return
	}
	if wasAccepted {
		o.Applied = append(o.Applied, lease.Event{Type: lease.Removed, Lease: given})
	}
	if why := r.Reason + r.Why; !e.refused() || e.note.refusal != why {
		o.Rejected = append(o.Rejected, r)
	}
	e.note = noteFor(key, l, r.Reason+r.Why)
	s.leases[key] = e
}

// noteFor is the note a lease needs, if any.
func noteFor(key string, l *lease.Lease, refusal string) *note {
	v4, v6, err := lease.ParseKey(key)
	odd := err != nil || v4 != l.Subnet || v6 != l.IPv6Subnet
	if !odd && refusal == "" {
		return nil
	}
	return &note{refusal: refusal, v4: l.Subnet, v6: l.IPv6Subnet, odd: odd}
}

// leaseOf is the lease key names, with e's attributes.
func leaseOf(key string, e *entry) lease.Lease {
	if e.note != nil && e.note.odd {
		return lease.Lease{Subnet: e.note.v4, IPv6Subnet: e.note.v6, Attrs: e.attrs}
	}
	// Keys are stored only once a lease carried them, so they parse,
	// unless the subnets were unmasked (odd, above).
	v4, v6, _ := lease.ParseKey(key)
	return lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: e.attrs}
}
