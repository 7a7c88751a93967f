package config

import (
	"fmt"
	"net/netip"
)

// specialRange is an address block that can never hold pod subnets: the
// kernel treats its addresses as local-only or group addresses, so a node
// given a subnet there could not route it, and a route flanneld adds for it
// would shadow the host's own (lo, multicast, link-local) routes.
type specialRange struct {
	prefix netip.Prefix
	what   string
}

// specialRanges lists the blocks of one family (a function, not a
// package variable, so nothing can change the list).
func specialRanges(v6 bool) []specialRange {
	if v6 {
		return []specialRange{
			{netip.MustParsePrefix("::1/128"), "loopback"},
			{netip.MustParsePrefix("fe80::/10"), "link-local"},
			{netip.MustParsePrefix("ff00::/8"), "multicast"},
		}
	}
	return []specialRange{
		{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
		{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
		{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	}
}

// refuseSpecial refuses a network that is the whole address space or
// overlaps a block no pod may live in. Upstream refuses 0.0.0.0/0 and ::/0
// (as an unset Network); the other blocks are refused here because a
// subnet leased from them breaks the node instead of failing loudly.
func (f family) refuseSpecial(p netip.Prefix) error {
	if p.Bits() == 0 {
		return fmt.Errorf("%s %s is the whole address space: its routes would replace this node's default route; use a private range such as \"%s\": %q",
			f.networkField, p, f.networkField, f.example)
	}
	for _, r := range specialRanges(f.v6) {
		if r.prefix.Overlaps(p) {
			return fmt.Errorf("%s %s overlaps the %s range %s, where no node can route pod addresses; use a private range such as \"%s\": %q",
				f.networkField, p, r.what, r.prefix, f.networkField, f.example)
		}
	}
	return nil
}
