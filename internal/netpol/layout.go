package netpol

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
)

// class is a group of pods with the very same grants in one direction:
// they share one chain and its sets, so the kernel's work per packet is one
// map lookup to find the class and two set lookups in it, however many
// policies there are.
type class struct {
	key    string // the sorted keys of its grants, then its tier rules'
	grants []*Grant
	pods   []*PodRules
	// tiers is the first pod's rules, for the ClusterNetworkPolicy rules
	// and NetworkPolicy isolation every pod of the class shares.
	tiers *PodRules
}

// hash identifies the class by its grants (the same grants give the same
// chain name in every sync).
func (c *class) hash() uint64 {
	h := fnv.New64a()
	h.Write([]byte(c.key))
	return h.Sum64()
}

// layout groups each direction's isolated pods into classes, in a stable
// order (by the first pod's address).
func layout(m *Model) [2][]*class {
	var out [2][]*class
	for d := range m.Rules {
		byKey := map[string]*class{}
		ips := make([]netip.Addr, 0, len(m.Rules[d]))
		for ip := range m.Rules[d] {
			ips = append(ips, ip)
		}
		slices.SortFunc(ips, netip.Addr.Compare)
		for _, ip := range ips {
			r := m.Rules[d][ip]
			keys := make([]string, len(r.Grants))
			for i, g := range r.Grants {
				keys[i] = g.key
			}
			slices.Sort(keys)
			key := strings.Join(slices.Compact(keys), "\x00") + r.tierKey()
			c := byKey[key]
			if c == nil {
				c = &class{key: key, grants: r.Grants, tiers: r}
				byKey[key] = c
				out[d] = append(out[d], c)
			}
			c.pods = append(c.pods, r)
		}
	}
	return out
}

// portElem is one element of a class's port set: peers on a port range.
type portElem struct {
	peer     IPRange
	proto    Proto
	from, to uint16
}

// elements turns a class's entries of one family into disjoint set
// elements (nftables refuses overlapping intervals): the port space of
// each protocol is cut at every range boundary, each piece gets the union
// of the peers allowed on it, and neighbouring pieces with the same peers
// are joined again.
func (c *class) elements(v6 bool) (ports []portElem, all []IPRange) {
	byProto := map[Proto][]Entry{}
	for _, g := range c.grants {
		for _, e := range g.Entries {
			if e.Peer.From.Is6() != v6 {
				continue
			}
			if e.AllPorts {
				all = append(all, e.Peer)
			} else {
				byProto[e.Port.Proto] = append(byProto[e.Port.Proto], e)
			}
		}
	}
	for _, proto := range []Proto{TCP, UDP, SCTP} {
		ports = append(ports, protoElements(proto, byProto[proto])...)
	}
	return ports, mergeRanges(all)
}

func protoElements(proto Proto, es []Entry) []portElem {
	if len(es) == 0 {
		return nil
	}
	var cuts []int
	for _, e := range es {
		cuts = append(cuts, int(e.Port.From), int(e.Port.To)+1)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []portElem
	var prev []IPRange
	prevFrom := -1
	flush := func(to int) {
		for _, p := range prev {
			out = append(out, portElem{p, proto, uint16(prevFrom), uint16(to)})
		}
	}
	for i := 0; i+1 < len(cuts); i++ {
		from, to := cuts[i], cuts[i+1]-1
		var peers []IPRange
		for _, e := range es {
			if int(e.Port.From) <= from && to <= int(e.Port.To) {
				peers = append(peers, e.Peer)
			}
		}
		peers = mergeRanges(peers)
		if prevFrom >= 0 && slices.Equal(peers, prev) {
			continue // extends the current piece
		}
		if prevFrom >= 0 {
			flush(from - 1)
		}
		prev, prevFrom = peers, from
	}
	if prevFrom >= 0 {
		flush(cuts[len(cuts)-1] - 1)
	}
	return out
}
