package backend

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/lease"
)

// fakeRoutes is a kernel routing table in memory: one route per
// destination, as the main table keeps it for these routes.
type fakeRoutes struct {
	routes map[netip.Prefix]netlink.Route
	fail   map[netip.Prefix]error // Replace fails for these
	writes int
}

func newFakeRoutes() *fakeRoutes {
	return &fakeRoutes{routes: map[netip.Prefix]netlink.Route{}, fail: map[netip.Prefix]error{}}
}

func (f *fakeRoutes) Replace(r *netlink.Route) error {
	dst, _ := ipnet.Prefix(r.Dst)
	if err := f.fail[dst]; err != nil {
		return err
	}
	f.writes++
	k := *r
	k.Protocol = unix.RTPROT_BOOT
	f.routes[dst] = k
	return nil
}

func (f *fakeRoutes) Delete(r *netlink.Route) error {
	dst, _ := ipnet.Prefix(r.Dst)
	if have, ok := f.routes[dst]; ok && have.Gw.Equal(r.Gw) {
		delete(f.routes, dst)
	}
	return nil
}

func (f *fakeRoutes) Visit(family, link int, fn func(netlink.Route) bool) error {
	for _, r := range f.routes {
		if r.LinkIndex == link && !fn(r) {
			break
		}
	}
	return nil
}

func (f *fakeRoutes) gw(t *testing.T, dst string) string {
	t.Helper()
	r, ok := f.routes[netip.MustParsePrefix(dst)]
	if !ok {
		return ""
	}
	return r.Gw.String()
}

const testLink = 2

func route(dst, gw string) PeerRoute {
	return PeerRoute{Dst: netip.MustParsePrefix(dst), Gw: netip.MustParseAddr(gw), Link: testLink}
}

// testEngine is a PeerSet of plain routes over a fake kernel, as host-gw
// has.
type testEngine struct {
	*PeerSet[PeerRoute]
	routes *Routes
	table  *RouteTable[PeerRoute]
}

func newTestEngine(k RouteKernel) testEngine {
	w := NewRoutes(k, netip.MustParsePrefix("10.244.0.0/16"), map[int]string{testLink: "eth0"})
	t := NewRouteTable(func(r PeerRoute) (PeerRoute, bool) { return r, true }, w)
	return testEngine{NewPeerSet("test", t), w, t}
}

// unroutable is host-gw's writer in miniature: it refuses some next hops.
type unroutable struct {
	*Routes
	off map[netip.Addr]bool
}

func (u unroutable) Set(dst netip.Prefix, h Hop) error {
	if u.off[h.Gw] {
		return ErrUnroutable
	}
	return u.Routes.Set(dst, h)
}

func TestPeerRoutesTwinLeaseKeepsTheRoute(t *testing.T) {
	k := newFakeRoutes()
	p := newTestEngine(k)
	p.Set("a", route("10.244.1.0/24", "198.51.100.2"))
	p.Set("twin", route("10.244.1.0/24", "198.51.100.9"))
	if got := k.gw(t, "10.244.1.0/24"); got != "198.51.100.9" {
		t.Fatalf("after the twin: via %q, want the newest lease's 198.51.100.9", got)
	}
	p.Remove("twin")
	if got := k.gw(t, "10.244.1.0/24"); got != "198.51.100.2" {
		t.Fatalf("twin removed: via %q, want the remaining lease's 198.51.100.2", got)
	}
	p.Remove("a")
	if got := k.gw(t, "10.244.1.0/24"); got != "" {
		t.Fatalf("both removed: route via %q left", got)
	}
}

func TestPeerRoutesKeepsFailedWritesAndRetries(t *testing.T) {
	k := newFakeRoutes()
	p := newTestEngine(k)
	dst := netip.MustParsePrefix("10.244.2.0/24")
	k.fail[dst] = errors.New("no buffer space")
	p.Set("b", route("10.244.2.0/24", "198.51.100.3"))
	if !p.Failed() {
		t.Fatal("a failed write is not reported")
	}
	delete(k.fail, dst)
	r := Repairs{}
	if err := p.Repair(r, false); err != nil {
		t.Fatal(err)
	}
	if got := k.gw(t, "10.244.2.0/24"); got != "198.51.100.3" || r["route"] != 1 || p.Failed() {
		t.Fatalf("after repair: via %q, repairs %v, failed %v; want the route restored and counted once", got, r, p.Failed())
	}
}

func TestPeerRoutesUnroutableIsNoFailure(t *testing.T) {
	k := newFakeRoutes()
	w := NewRoutes(k, netip.MustParsePrefix("10.244.0.0/16"), map[int]string{testLink: "eth0"})
	p := NewPeerSet("test", NewRouteTable(func(r PeerRoute) (PeerRoute, bool) { return r, true },
		unroutable{w, map[netip.Addr]bool{netip.MustParseAddr("203.0.113.4"): true}}))
	p.Set("c", route("10.244.3.0/24", "203.0.113.4"))
	if p.Failed() {
		t.Fatal("an unroutable peer counts as a failed write; the healer would retry it at once forever")
	}
}

func TestPeerRoutesRepairRestoresAndPrunes(t *testing.T) {
	k := newFakeRoutes()
	p := newTestEngine(k)
	p.routes.SetOwn(netip.MustParsePrefix("10.244.0.0/24"))
	p.Set("a", route("10.244.1.0/24", "198.51.100.2"))
	p.Set("b", route("10.244.2.0/24", "198.51.100.3"))
	stranger := route("10.244.7.0/24", "198.51.100.7")
	ownRoute := route("10.244.0.0/24", "198.51.100.1")
	outside := route("192.168.5.0/24", "198.51.100.8")
	for _, r := range []PeerRoute{stranger, ownRoute, outside} {
		_ = k.Replace(r.Netlink())
	}
	delete(k.routes, netip.MustParsePrefix("10.244.1.0/24"))
	k.routes[netip.MustParsePrefix("10.244.2.0/24")] = *route("10.244.2.0/24", "198.51.100.99").Netlink()

	r := Repairs{}
	if err := p.Repair(r, false); err != nil {
		t.Fatal(err)
	}
	if r["route"] != 2 || k.gw(t, "10.244.1.0/24") != "198.51.100.2" || k.gw(t, "10.244.2.0/24") != "198.51.100.3" {
		t.Fatalf("repairs %v, routes %v; want both peers' routes restored", r, k.routes)
	}
	if k.gw(t, "10.244.7.0/24") == "" {
		t.Fatal("pruned before the leases were known")
	}
	if err := p.Repair(Repairs{}, true); err != nil {
		t.Fatal(err)
	}
	if k.gw(t, "10.244.7.0/24") != "" {
		t.Error("a route no lease wants survived the prune")
	}
	if k.gw(t, "10.244.0.0/24") == "" || k.gw(t, "192.168.5.0/24") == "" {
		t.Error("the prune took this node's own subnet or a route outside the network")
	}
}

func TestPeerRoutesInLine(t *testing.T) {
	k := newFakeRoutes()
	p := newTestEngine(k)
	want := route("10.244.1.0/24", "198.51.100.2")
	p.Set("a", want)
	upd := func(typ uint16, r PeerRoute) netlink.RouteUpdate {
		nr := *r.Netlink()
		nr.Table = unix.RT_TABLE_MAIN
		return netlink.RouteUpdate{Type: typ, Route: nr}
	}
	cases := []struct {
		name string
		u    netlink.RouteUpdate
		in   bool
	}{
		{"echo of our add", upd(unix.RTM_NEWROUTE, want), true},
		{"our route deleted", upd(unix.RTM_DELROUTE, want), false},
		{"our route re-pointed", upd(unix.RTM_NEWROUTE, route("10.244.1.0/24", "198.51.100.66")), false},
		{"a route no peer wants deleted", upd(unix.RTM_DELROUTE, route("10.244.9.0/24", "198.51.100.9")), true},
	}
	for _, c := range cases {
		if got := RouteInLine(p.table, c.u); got != c.in {
			t.Errorf("%s: InLine = %v, want %v", c.name, got, c.in)
		}
	}
}

func TestPeersPruneAfterFirstBatchAndKickOnFailure(t *testing.T) {
	k := newFakeRoutes()
	e := newTestEngine(k)
	p := NewPeers(PeersConfig{Name: "test", Sets: []PeerEngine{e.PeerSet}})
	_ = k.Replace(route("10.244.7.0/24", "198.51.100.7").Netlink())
	k.fail[netip.MustParsePrefix("10.244.2.0/24")] = errors.New("no buffer space")
	set := func(ev lease.Event) {
		e.Set(ev.Lease.Key(), route(ev.Lease.Subnet.String(), ev.Lease.Attrs.PublicIP.String()))
	}
	p.Apply([]lease.Event{{Type: lease.Added, Lease: lease.Lease{
		Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("198.51.100.3")},
	}}}, set)
	if k.gw(t, "10.244.7.0/24") != "" {
		t.Error("the first batch did not prune a route no lease wants")
	}
	select {
	case <-p.kick:
	default:
		t.Error("a failed write did not kick the healer")
	}
}
