package netpol

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// The set elements of a class must be disjoint (the kernel refuses
// overlaps) and match exactly what the class's entries allow.
func TestElementsDisjointAndExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(32))}) }
	protos := []Proto{TCP, UDP, SCTP}
	for round := range 200 {
		var entries []Entry
		for range 1 + rng.IntN(12) {
			a, b := addr(), addr()
			if b.Less(a) {
				a, b = b, a
			}
			from := uint16(rng.IntN(20))
			e := Entry{Peer: IPRange{a, b}, Port: PortRange{protos[rng.IntN(3)], from, from + uint16(rng.IntN(6))}}
			e.AllPorts = rng.IntN(8) == 0
			entries = append(entries, e)
		}
		c := &class{grants: []*Grant{{Entries: entries}}}
		ports, all := c.elements(false)
		for i := range ports {
			for j := range i {
				p, q := ports[i], ports[j]
				if p.proto == q.proto && p.from <= q.to && q.from <= p.to && p.peer.From.Compare(q.peer.To) <= 0 && q.peer.From.Compare(p.peer.To) <= 0 {
					t.Fatalf("round %d: elements overlap: %+v and %+v", round, p, q)
				}
			}
		}
		for range 300 {
			a, pr, port := addr(), protos[rng.IntN(3)], uint16(rng.IntN(28))
			want := (&PodRules{Grants: c.grants}).allows(a, pr, port) != nil
			got := inRanges(all, a)
			for _, p := range ports {
				got = got || p.peer.Contains(a) && p.proto == pr && p.from <= port && port <= p.to
			}
			if got != want {
				t.Fatalf("round %d: %s %d/%s: elements say %v, entries %v\nentries %+v\nports %+v all %v", round, a, port, pr, got, want, entries, ports, all)
			}
		}
	}
}

func TestRanges(t *testing.T) {
	got := blockRanges(netip.MustParsePrefix("10.0.0.0/8"), []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.255.255.255/32"), netip.MustParsePrefix("11.0.0.0/8")})
	want := []IPRange{
		{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.255.255")},
		{netip.MustParseAddr("10.2.0.0"), netip.MustParseAddr("10.255.255.254")},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("10.0.0.0/8 except 10.1/16, 10.255.255.255: %v, want %v", got, want)
	}
	m := mergeRanges([]IPRange{
		{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.5")},
		{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.4")},
		{netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("10.0.0.9")},
		{netip.MustParseAddr("::1"), netip.MustParseAddr("::1")},
	})
	if len(m) != 3 || m[0].String() != "10.0.0.1-10.0.0.5" || m[1].String() != "10.0.0.7-10.0.0.9" || m[2].String() != "::1" {
		t.Errorf("merge: %v", m)
	}
}
