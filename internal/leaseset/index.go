package leaseset

import (
	"net/netip"

	"github.com/flannelgo/flannel/internal/lease"
)

// accept indexes the subnets of l, just recorded under key as accepted.
func (s *Set) accept(key string, l *lease.Lease) {
	s.accepted++
	for _, p := range subnets(l) {
		s.index[p] = key
		s.lens[prefixLen{p.Addr().Is6(), p.Bits()}]++
	}
}

// unaccept drops the accepted lease key (whose entry is e) from the index
// and returns the lease the receivers were given for it.
func (s *Set) unaccept(key string, e *entry) lease.Lease {
	l := leaseOf(key, e)
	s.accepted--
	for _, p := range subnets(&l) {
		if s.index[p] == key {
			delete(s.index, p)
		}
		pl := prefixLen{p.Addr().Is6(), p.Bits()}
		if s.lens[pl]--; s.lens[pl] <= 0 {
			delete(s.lens, pl)
		}
	}
	return l
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

// hostPrefixes is the node's foreign state less what the daemon itself
// programmed for accepted leases (host-gw and DirectRouting routes sit on
// the external interface) and its own subnet (the CNI bridge, blackhole).
func (s *Set) hostPrefixes() ([]HostPrefix, error) {
	all, err := s.host.Prefixes()
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	for _, h := range all {
		_, accepted := s.index[h.Prefix.Masked()]
		if h.Prefix.Bits() == 0 || accepted || s.ownSubnetHas(h.Prefix) {
			continue
		}
		out = append(out, h)
	}
	return out, nil
}

func (s *Set) ownSubnetHas(p netip.Prefix) bool {
	for _, own := range []netip.Prefix{s.own.Subnet, s.own.IPv6Subnet} {
		if own.IsValid() && own.Bits() <= p.Bits() && own.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// overlapping finds an accepted lease other than key whose subnet overlaps
// p: one that holds p, found by looking up each prefix of p from p itself
// up, or one inside p, looked for (by a scan) only when accepted subnets
// longer than p exist, which a network of one SubnetLen never has.
func (s *Set) overlapping(key string, p netip.Prefix) (string, netip.Prefix, bool) {
	for b := p.Bits(); b >= 0; b-- {
		q, _ := p.Addr().Prefix(b)
		if k, ok := s.index[q]; ok && k != key {
			return k, q, true
		}
	}
	for pl := range s.lens {
		if pl.v6 != p.Addr().Is6() || pl.bits <= p.Bits() {
			continue
		}
		for q, k := range s.index {
			if k != key && q.Bits() > p.Bits() && p.Contains(q.Addr()) {
				return k, q, true
			}
		}
		break
	}
	return "", netip.Prefix{}, false
}
