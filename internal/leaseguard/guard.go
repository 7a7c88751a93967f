// Package leaseguard screens other nodes' leases before a backend programs
// them. A lease is data any writer of the datastore controls; one bad lease
// (a subnet on the underlay, a loopback public address, the node's own
// address) would otherwise become a route or FDB entry that cuts the node
// off from its cluster. The guard refuses such leases by name and turns a
// good lease that turns bad into a removal, so the backend drops what it
// programmed for it.
package leaseguard

import (
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
// (not on flannel's own devices). The daemon reads them with netlink; the
// guard itself never touches the kernel.
type Host interface {
	Prefixes() ([]HostPrefix, error)
}

// Guard remembers which leases it let through, so that a lease refused
// after having been accepted becomes a removal, and a removal of a lease
// it never let through is dropped. Not safe for concurrent use: the
// daemon's follow loop owns it.
type Guard struct {
	v4, v6   netip.Prefix // the cluster networks; invalid when disabled
	own      *lease.Lease
	host     Host
	accepted map[string]lease.Attrs // by key, which holds the subnets
	odd      map[string]lease.Lease // the subnets of accepted keys that do not parse back to them
	refused  map[string]string      // key -> reason and facts last reported

	// index finds accepted subnets by prefix and lens counts their
	// lengths, so that checking a lease against thousands of accepted ones
	// is a few map lookups, not a scan of all of them per event.
	index map[netip.Prefix]string // masked subnet -> lease key
	lens  map[prefixLen]int
}

type prefixLen struct {
	v6   bool
	bits int
}

// New builds a guard for the network cfg and this node's lease own.
func New(cfg *config.Config, own *lease.Lease, host Host) *Guard {
	g := &Guard{own: own, host: host, accepted: map[string]lease.Attrs{}, odd: map[string]lease.Lease{}, refused: map[string]string{},
		index: map[netip.Prefix]string{}, lens: map[prefixLen]int{}}
	if cfg.EnableIPv4 {
		g.v4 = cfg.Network
	}
	if cfg.EnableIPv6 {
		g.v6 = cfg.IPv6Network
	}
	return g
}

// Filter returns the events the backend may apply, and the rejections not
// reported before (each distinct refusal of a key is reported once).
// hostErr is set when the node's addresses could not be read; the host
// check is then skipped for this batch.
func (g *Guard) Filter(batch []lease.Event) (out []lease.Event, fresh []Rejection, hostErr error) {
	host, hostErr := g.hostPrefixes()
	out = make([]lease.Event, 0, len(batch))
	for _, ev := range batch {
		key := ev.Lease.Key()
		_, had := g.accepted[key]
		if ev.Type == lease.Removed {
			delete(g.refused, key)
			if had {
				out = append(out, lease.Event{Type: lease.Removed, Lease: g.forget(key)})
			}
			continue
		}
		if r, bad := g.check(&ev.Lease, host); bad {
			if had {
				out = append(out, lease.Event{Type: lease.Removed, Lease: g.forget(key)})
			}
			if g.refused[key] != r.Reason+r.Why {
				g.refused[key] = r.Reason + r.Why
				fresh = append(fresh, r)
			}
			continue
		}
		delete(g.refused, key)
		g.accept(key, ev.Lease)
		out = append(out, ev)
	}
	return out, fresh, hostErr
}

// hostPrefixes is the node's foreign state less what the daemon itself
// programmed for accepted leases (host-gw and DirectRouting routes sit on
// the external interface) and its own subnet (the CNI bridge, blackhole).
func (g *Guard) hostPrefixes() ([]HostPrefix, error) {
	if g.host == nil {
		return nil, nil
	}
	all, err := g.host.Prefixes()
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	for _, h := range all {
		_, accepted := g.index[h.Prefix.Masked()]
		if h.Prefix.Bits() == 0 || accepted || g.ownSubnetHas(h.Prefix) {
			continue
		}
		out = append(out, h)
	}
	return out, nil
}

func (g *Guard) ownSubnetHas(p netip.Prefix) bool {
	for _, own := range []netip.Prefix{g.own.Subnet, g.own.IPv6Subnet} {
		if own.IsValid() && own.Bits() <= p.Bits() && own.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func subnets(l *lease.Lease) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{l.Subnet, l.IPv6Subnet} {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Accepted is the number of leases let through and not removed since:
// those the backend programs.
func (g *Guard) Accepted() int { return len(g.accepted) }

// accept records key as programmed with l's subnets. Only the attributes
// are kept: the subnets are in the key (a whole lease per key, stored out
// of line in the map, cost 2 MB at 10000 peers).
func (g *Guard) accept(key string, l lease.Lease) {
	g.forget(key)
	g.accepted[key] = l.Attrs
	if v4, v6, err := lease.ParseKey(key); err != nil || v4 != l.Subnet || v6 != l.IPv6Subnet {
		g.odd[key] = lease.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet}
	}
	for _, p := range subnets(&l) {
		g.index[p] = key
		g.lens[prefixLen{p.Addr().Is6(), p.Bits()}]++
	}
}

// forget drops key from the accepted leases and returns the lease the
// backend was given for it (zero if none).
func (g *Guard) forget(key string) lease.Lease {
	attrs, had := g.accepted[key]
	if !had {
		return lease.Lease{}
	}
	l := g.leaseOf(key)
	l.Attrs = attrs
	delete(g.accepted, key)
	delete(g.odd, key)
	for _, p := range subnets(&l) {
		if g.index[p] == key {
			delete(g.index, p)
		}
		pl := prefixLen{p.Addr().Is6(), p.Bits()}
		if g.lens[pl]--; g.lens[pl] <= 0 {
			delete(g.lens, pl)
		}
	}
	return l
}

// leaseOf returns the subnets of an accepted key. Subnet managers hand
// out masked subnets, whose keys parse back; a key that does not (a
// subnet that is not a network address) keeps its subnets in odd.
func (g *Guard) leaseOf(key string) lease.Lease {
	if l, ok := g.odd[key]; ok {
		return l
	}
	v4, v6, _ := lease.ParseKey(key)
	return lease.Lease{Subnet: v4, IPv6Subnet: v6}
}

// overlapping finds an accepted lease other than key whose subnet overlaps
// s: one that holds s, found by looking up each prefix of s from s itself
// up, or one inside s, looked for (by a scan) only when accepted subnets
// longer than s exist, which a network of one SubnetLen never has.
func (g *Guard) overlapping(key string, s netip.Prefix) (string, netip.Prefix, bool) {
	for b := s.Bits(); b >= 0; b-- {
		p, _ := s.Addr().Prefix(b)
		if k, ok := g.index[p]; ok && k != key {
			return k, p, true
		}
	}
	for pl := range g.lens {
		if pl.v6 != s.Addr().Is6() || pl.bits <= s.Bits() {
			continue
		}
		for p, k := range g.index {
			if k != key && p.Bits() > s.Bits() && s.Contains(p.Addr()) {
				return k, p, true
			}
		}
		break
	}
	return "", netip.Prefix{}, false
}
