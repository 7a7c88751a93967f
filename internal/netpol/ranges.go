package netpol

import (
	"net/netip"
	"slices"
)

// prefixRange is the inclusive address range of p.
func prefixRange(p netip.Prefix) IPRange {
	p = p.Masked()
	from := p.Addr()
	b := from.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	to, _ := netip.AddrFromSlice(b)
	return IPRange{from, to}
}

// allAddrs is every address of both families: a rule without peers.
func allAddrs() []IPRange {
	return []IPRange{
		prefixRange(netip.MustParsePrefix("0.0.0.0/0")),
		prefixRange(netip.MustParsePrefix("::/0")),
	}
}

// mergeRanges sorts rs and joins overlapping and adjacent ranges, so the
// result is disjoint (nftables refuses overlapping interval elements).
func mergeRanges(rs []IPRange) []IPRange {
	if len(rs) < 2 {
		return rs
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b IPRange) int { return a.From.Compare(b.From) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.To.BitLen() == r.From.BitLen() && (r.From.Compare(last.To) <= 0 || last.To.Next() == r.From) {
			if r.To.Compare(last.To) > 0 {
				last.To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtract removes cut from every range of rs (disjoint and sorted, and
// stays so).
func subtract(rs []IPRange, cut IPRange) []IPRange {
	var out []IPRange
	for _, r := range rs {
		if r.From.BitLen() != cut.From.BitLen() || cut.To.Compare(r.From) < 0 || cut.From.Compare(r.To) > 0 {
			out = append(out, r)
			continue
		}
		if r.From.Compare(cut.From) < 0 {
			out = append(out, IPRange{r.From, cut.From.Prev()})
		}
		if cut.To.Compare(r.To) < 0 {
			out = append(out, IPRange{cut.To.Next(), r.To})
		}
	}
	return out
}

// blockRanges is an ipBlock: cidr minus every except prefix.
func blockRanges(cidr netip.Prefix, except []netip.Prefix) []IPRange {
	rs := []IPRange{prefixRange(cidr)}
	for _, e := range except {
		rs = subtract(rs, prefixRange(e))
	}
	return rs
}
