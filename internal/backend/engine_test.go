package backend

import (
	"fmt"
	"net/netip"
	"testing"
)

// fakeEntries is one kind of kernel entry in memory: one value per key,
// as the kernel keeps a neighbour or an FDB entry.
type fakeEntries struct {
	m      map[string]string
	writes int
}

func (f *fakeEntries) Set(k, v string) error { f.m[k] = v; f.writes++; return nil }

func (f *fakeEntries) Delete(k, v string) error {
	if f.m[k] == v {
		delete(f.m, k)
	}
	return nil
}

func (f *fakeEntries) Visit(reset func(), fn func(k, v string, ours bool)) error {
	reset()
	for k, v := range f.m {
		fn(k, v, true)
	}
	return nil
}

func (f *fakeEntries) Same(want, have string) bool { return want == have }
func (f *fakeEntries) Describe(k, v string) string { return k + "=" + v }

// vtep is a peer in the shape of a VXLAN one: its neighbour is keyed by
// its VTEP address, its FDB entry by its MAC.
type vtep struct{ addr, mac, public string }

func (p vtep) String() string { return fmt.Sprintf("%s %s at %s", p.addr, p.mac, p.public) }

func newVTEPs() (*PeerSet[vtep], *fakeEntries, *fakeEntries) {
	neigh, fdb := &fakeEntries{m: map[string]string{}}, &fakeEntries{m: map[string]string{}}
	s := NewPeerSet("test",
		NewTable("neighbour", func(p vtep) (string, string, bool) { return p.addr, p.mac, true }, neigh),
		NewTable("fdb", func(p vtep) (string, string, bool) { return p.mac, p.public, p.public != "" }, fdb))
	return s, neigh, fdb
}

// Two leases share one FDB entry (a twin: same MAC and public address):
// removing either keeps it; removing both takes it away. Each lease's own
// neighbour comes and goes with it.
func TestPeerSetSharedEntry(t *testing.T) {
	s, neigh, fdb := newVTEPs()
	s.Set("a", vtep{"10.244.2.0", "m2", "198.51.100.2"})
	s.Set("twin", vtep{"10.244.5.0", "m2", "198.51.100.2"})
	s.Remove("twin")
	if fdb.m["m2"] != "198.51.100.2" || neigh.m["10.244.2.0"] != "m2" || neigh.m["10.244.5.0"] != "" {
		t.Fatalf("twin removed: fdb %v neigh %v; want a's entries kept and the twin's neighbour gone", fdb.m, neigh.m)
	}
	s.Set("twin", vtep{"10.244.5.0", "m2", "198.51.100.2"})
	s.Remove("a")
	if fdb.m["m2"] != "198.51.100.2" {
		t.Fatalf("a removed: fdb %v; the twin still wants the entry", fdb.m)
	}
	s.Remove("twin")
	if len(fdb.m) != 0 || len(neigh.m) != 0 {
		t.Fatalf("both removed: fdb %v neigh %v left", fdb.m, neigh.m)
	}
}

// A MAC that moved to another address while an older lease still names
// the old one: the newest lease decides, and removing it hands the entry
// back to the older lease.
func TestPeerSetNewestLeaseWins(t *testing.T) {
	s, _, fdb := newVTEPs()
	s.Set("old", vtep{"10.244.2.0", "m2", "198.51.100.12"})
	s.Set("moved", vtep{"10.244.6.0", "m2", "198.51.100.66"})
	if fdb.m["m2"] != "198.51.100.66" {
		t.Fatalf("fdb %v, want the newest lease's address", fdb.m)
	}
	s.Remove("moved")
	if fdb.m["m2"] != "198.51.100.12" {
		t.Fatalf("newest removed: fdb %v, want the older lease's address back", fdb.m)
	}
}

// A lease that changes is written anew without its entries passing
// through "not wanted", and one that does not change writes nothing.
func TestPeerSetChangeAndNoChange(t *testing.T) {
	s, neigh, fdb := newVTEPs()
	s.Set("a", vtep{"10.244.2.0", "m2", "198.51.100.2"})
	writes := neigh.writes + fdb.writes
	s.Set("a", vtep{"10.244.2.0", "m2", "198.51.100.2"})
	if neigh.writes+fdb.writes != writes {
		t.Fatal("an unchanged lease was written again")
	}
	s.Set("a", vtep{"10.244.2.0", "m3", "198.51.100.2"})
	if neigh.m["10.244.2.0"] != "m3" || fdb.m["m3"] != "198.51.100.2" || fdb.m["m2"] != "" {
		t.Fatalf("after the MAC changed: neigh %v fdb %v", neigh.m, fdb.m)
	}
	if s.Len() != 1 {
		t.Fatalf("%d peers, want 1", s.Len())
	}
}

// A peer may want no entry of a kind (a direct peer: no FDB entry); when
// it starts wanting one, it is written, and when it stops, deleted.
func TestPeerSetEntryComesAndGoes(t *testing.T) {
	s, _, fdb := newVTEPs()
	s.Set("a", vtep{"10.244.2.0", "m2", ""})
	if len(fdb.m) != 0 {
		t.Fatalf("fdb %v for a peer that wants none", fdb.m)
	}
	s.Set("a", vtep{"10.244.2.0", "m2", "198.51.100.2"})
	if fdb.m["m2"] != "198.51.100.2" {
		t.Fatalf("fdb %v, want the entry written", fdb.m)
	}
	s.Set("a", vtep{"10.244.2.0", "m2", ""})
	if len(fdb.m) != 0 {
		t.Fatalf("fdb %v, want the entry gone", fdb.m)
	}
}

// Repair restores what is missing or wrong, counts it by kind, and
// deletes what no peer wants only when told to prune.
func TestPeerSetRepair(t *testing.T) {
	s, neigh, fdb := newVTEPs()
	s.Set("a", vtep{"10.244.2.0", "m2", "198.51.100.2"})
	s.Set("b", vtep{"10.244.3.0", "m3", "198.51.100.3"})
	delete(neigh.m, "10.244.2.0")
	fdb.m["m3"] = "198.51.100.99"
	fdb.m["m9"] = "198.51.100.9"
	r := Repairs{}
	if err := s.Repair(r, false); err != nil {
		t.Fatal(err)
	}
	if r["neighbour"] != 1 || r["fdb"] != 1 || neigh.m["10.244.2.0"] != "m2" || fdb.m["m3"] != "198.51.100.3" {
		t.Fatalf("repairs %v, neigh %v, fdb %v; want one of each restored", r, neigh.m, fdb.m)
	}
	if fdb.m["m9"] == "" {
		t.Fatal("pruned without being told to")
	}
	if err := s.Repair(Repairs{}, true); err != nil {
		t.Fatal(err)
	}
	if fdb.m["m9"] != "" {
		t.Fatal("an entry no peer wants survived the prune")
	}
}

// Rebuild re-derives the wanted entries, after what they are derived from
// changed (a device re-created with a new index).
func TestPeerSetRebuild(t *testing.T) {
	link := 7
	k := newFakeRoutes()
	w := NewRoutes(k, netip.MustParsePrefix("10.244.0.0/16"), map[int]string{7: "flannel.ipip"})
	tab := NewRouteTable(func(dst netip.Prefix) (PeerRoute, bool) {
		return PeerRoute{Dst: dst, Gw: dst.Addr(), Link: link, Onlink: true}, true
	}, w)
	s := NewPeerSet("test", tab)
	s.Set("a", netip.MustParsePrefix("10.244.2.0/24"))
	link = 9
	w.Relink(7, 9)
	s.Rebuild()
	delete(k.routes, netip.MustParsePrefix("10.244.2.0/24"))
	r := Repairs{}
	if err := s.Repair(r, true); err != nil {
		t.Fatal(err)
	}
	if got := k.routes[netip.MustParsePrefix("10.244.2.0/24")]; got.LinkIndex != 9 || r["route"] != 1 {
		t.Fatalf("after the relink: route %+v, repairs %v; want it through link 9", got, r)
	}
}

// A lease whose change moves one entry leaves its other entries unwritten.
func TestPeerSetWritesOnlyWhatChanged(t *testing.T) {
	s, neigh, fdb := newVTEPs()
	s.Set("a", vtep{"10.244.2.0", "m2", "198.51.100.2"})
	nw := neigh.writes
	s.Set("a", vtep{"10.244.2.0", "m2", "198.51.100.9"})
	if neigh.writes != nw || fdb.m["m2"] != "198.51.100.9" {
		t.Fatalf("neighbour written %d more times, fdb %v; want only the FDB entry rewritten", neigh.writes-nw, fdb.m)
	}
}
