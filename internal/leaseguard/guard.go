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
	accepted map[string]lease.Lease
	refused  map[string]string // key -> reason and facts last reported
}

// New builds a guard for the network cfg and this node's lease own.
func New(cfg *config.Config, own *lease.Lease, host Host) *Guard {
	g := &Guard{own: own, host: host, accepted: map[string]lease.Lease{}, refused: map[string]string{}}
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
		prev, had := g.accepted[key]
		if ev.Type == lease.Removed {
			delete(g.refused, key)
			if had {
				delete(g.accepted, key)
				out = append(out, lease.Event{Type: lease.Removed, Lease: prev})
			}
			continue
		}
		if r, bad := g.check(&ev.Lease, host); bad {
			if had {
				delete(g.accepted, key)
				out = append(out, lease.Event{Type: lease.Removed, Lease: prev})
			}
			if g.refused[key] != r.Reason+r.Why {
				g.refused[key] = r.Reason + r.Why
				fresh = append(fresh, r)
			}
			continue
		}
		delete(g.refused, key)
		g.accepted[key] = ev.Lease
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
	ours := map[netip.Prefix]bool{g.own.Subnet: true, g.own.IPv6Subnet: true}
	for _, l := range g.accepted {
		ours[l.Subnet], ours[l.IPv6Subnet] = true, true
	}
	out := all[:0:0]
	for _, h := range all {
		if h.Prefix.Bits() == 0 || ours[h.Prefix.Masked()] || g.ownSubnetHas(h.Prefix) {
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
