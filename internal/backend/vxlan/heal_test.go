package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/backend"
	bt "github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// healPair is tbtest's HealPair of two VXLAN nodes (IPv4 only).
type healPair struct{ *bt.HealPair }

func newHealPair(t *testing.T, tag, raw string) *healPair {
	t.Helper()
	return &healPair{bt.NewHealPair(t, "tbk-vx-"+tag, TypeName, false, newBackend(raw))}
}

// newBackend makes a node's backend for tbtest.NewHealPair.
func newBackend(raw string) func(n *bt.Node) (backend.Backend, error) {
	return func(n *bt.Node) (backend.Backend, error) {
		return NewWithHandle(n.H, &n.NSH, n.Ext, json.RawMessage(raw))
	}
}

// programmed checks that a holds everything b's lease asks for.
func (h *healPair) programmed(t *testing.T) error {
	macB := mustMAC(t, h.LB.Attrs.BackendData)
	return firstErr(
		readOf(routeOf(h.A.NS, "10.244.2.0/24")).has("10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"),
		readOf(neighOf(h.A.NS, "flannel.1")).has("10.244.2.0 lladdr "+macB+" PERMANENT"),
		readOf(fdbOf(h.A.NS, "flannel.1")).has(macB+" dst 198.51.100.12 dev flannel.1 permanent"),
		readOf(addrsOf(h.A.NS, "flannel.1")).has("\n10.244.1.0/32\n"),
	)
}

// reading is what a read of kernel state gave, for checks in waits: a
// device may be missing for a while, which is an error, not a failure.
type reading struct {
	got string
	err error
}

func readOf(got string, err error) reading { return reading{got, err} }

func (r reading) has(want string) error {
	if r.err != nil {
		return r.err
	}
	if !strings.Contains(r.got, want) {
		return fmt.Errorf("missing %q in:%s", want, r.got)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ip link del flannel.1: the device comes back with its MAC (peers' FDB
// entries for this node stay valid), its address, and every peer's route,
// neighbour and FDB entry; pods talk again.
func TestHealDeletedDevice(t *testing.T) {
	h := newHealPair(t, "hdel", `{}`)
	mac := mustMAC(t, h.LA.Attrs.BackendData)
	bt.Run(t, "ip", "-n", h.A.NS, "link", "del", "flannel.1")
	took := bt.WaitFor(t, 2*time.Second, "flannel.1 and b's entries restored", func() error {
		if dev := bt.Run(t, "ip", "-n", h.A.NS, "link", "show"); !strings.Contains(dev, "flannel.1") {
			return fmt.Errorf("no flannel.1")
		}
		return h.programmed(t)
	})
	t.Logf("flannel.1 re-created and programmed %s after deletion", took)
	assertContains(t, bt.Run(t, "ip", "-n", h.A.NS, "link", "show", "flannel.1"), "link/ether "+mac)
	assertContains(t, bt.Run(t, "ip", "-n", h.A.NS, "link", "show", "flannel.1"), "UP")
	if err := bt.TryPing(h.PA.NS, h.PB.Addr, 2*time.Second-took); err != nil {
		t.Fatalf("pods do not talk within 2 s of deleting flannel.1: %v", err)
	}
	// The healer counts repairs after the reconcile that made them
	// returns: the entries can be back a moment before their counts.
	bt.WaitFor(t, time.Second, "every kind of repair counted", func() error {
		for _, kind := range []string{"device", "address", "route", "neighbour", "fdb"} {
			if h.Rep.Count(kind) < 1 {
				return fmt.Errorf("no %s repair counted", kind)
			}
		}
		return nil
	})
}

// Each of a peer's kernel entries deleted by hand is back within 1 s; a
// flannel-shaped route no lease accounts for is removed.
func TestHealPeerEntries(t *testing.T) {
	h := newHealPair(t, "hent", `{}`)
	macB := mustMAC(t, h.LB.Attrs.BackendData)
	for _, tc := range []struct {
		kind string
		del  []string
	}{
		{"route", []string{"ip", "-n", h.A.NS, "route", "del", "10.244.2.0/24"}},
		{"neighbour", []string{"ip", "-n", h.A.NS, "neigh", "del", "10.244.2.0", "dev", "flannel.1"}},
		{"fdb", []string{"bridge", "-n", h.A.NS, "fdb", "del", macB, "dev", "flannel.1", "dst", "198.51.100.12", "self"}},
	} {
		kinds := []string{"route", "neighbour", "fdb"}
		before := map[string]int{}
		for _, k := range kinds {
			before[k] = h.Rep.Count(k)
		}
		bt.Run(t, tc.del...)
		took := bt.WaitFor(t, time.Second, tc.kind+" restored", func() error { return h.programmed(t) })
		t.Logf("%s restored %s after deletion", tc.kind, took)
		// The healer counts a repair after the reconcile that made it
		// returns: the entry can be back a moment before its count.
		bt.WaitFor(t, time.Second, tc.kind+" repair counted", func() error {
			if got := h.Rep.Count(tc.kind); got != before[tc.kind]+1 {
				return fmt.Errorf("%s repairs %d, want %d", tc.kind, got, before[tc.kind]+1)
			}
			return nil
		})
		// Only what was deleted is repaired: entries still in place are
		// recognised as such, not rewritten.
		for _, k := range kinds {
			want := before[k]
			if k == tc.kind {
				want++
			}
			if got := h.Rep.Count(k); got != want {
				t.Errorf("after deleting the %s: %s repairs %d, want %d", tc.kind, k, got, want)
			}
		}
	}
	bt.Run(t, "ip", "-n", h.A.NS, "route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "flannel.1", "onlink")
	bt.WaitFor(t, time.Second, "stale route removed", func() error {
		if got := routeTo(t, h.A.NS, "10.244.9.0/24"); got != "" {
			return fmt.Errorf("still there: %s", got)
		}
		return nil
	})
	bt.Ping(t, h.PA.NS, h.PB.Addr, 56, false)
}

// The external interface goes down and up: with DirectRouting the plain
// route it took along is put back, and pods talk again within 2 s.
func TestHealExternalFlap(t *testing.T) {
	h := newHealPair(t, "hflp", `{"DirectRouting":true}`)
	const want = "10.244.2.0/24 via 198.51.100.12 dev eth0"
	assertContains(t, routeTo(t, h.A.NS, "10.244.2.0/24"), want)
	bt.Run(t, "ip", "-n", h.A.NS, "link", "set", "eth0", "down")
	bt.Run(t, "ip", "-n", h.A.NS, "link", "set", "eth0", "up")
	took := bt.WaitFor(t, 2*time.Second, "direct route back", func() error {
		if got := routeTo(t, h.A.NS, "10.244.2.0/24"); !strings.Contains(got, want) {
			return fmt.Errorf("route now %q", got)
		}
		return nil
	})
	t.Logf("direct route back %s after eth0 came up", took)
	if err := bt.TryPing(h.PA.NS, h.PB.Addr, 2*time.Second-took); err != nil {
		t.Fatalf("pods do not talk within 2 s of the flap: %v", err)
	}
	assertLacks(t, fdbLines(t, h.A.NS, "flannel.1"), mustMAC(t, h.LB.Attrs.BackendData))
}

// Two leases share b's VtepMAC and PublicIP (b re-registered under another
// subnet while its old lease lingers). Removing either keeps the FDB entry
// the other needs; removing both takes it away.
func TestTwinLeasesShareFDB(t *testing.T) {
	a, b := twoNodes(t, "twin")
	nwA, la := up(t, a, `{}`, "10.244.1.0/24")
	nwB, lb := up(t, b, `{}`, "10.244.2.0/24")
	nwB.HandleEvents(ctx, added(la))
	twin := lb
	twin.Subnet = pfx("10.244.5.0/24")
	macB := mustMAC(t, lb.Attrs.BackendData)
	fdb := macB + " dst 198.51.100.12 dev flannel.1 permanent"
	nwA.HandleEvents(ctx, added(lb, twin))
	assertContains(t, fdbLines(t, a.NS, "flannel.1"), fdb)

	nwA.HandleEvents(ctx, bt.Removed(twin))
	assertContains(t, fdbLines(t, a.NS, "flannel.1"), fdb)
	assertContains(t, neighLines(t, a.NS, "flannel.1"), "10.244.2.0 lladdr "+macB+" PERMANENT")
	assertLacks(t, neighLines(t, a.NS, "flannel.1"), "10.244.5.0")
	assertLacks(t, routeLines(t, a.NS), "10.244.5.0")
	bt.Ping(t, a.NS, netip.MustParseAddr("10.244.2.0"), 56, false)

	nwA.HandleEvents(ctx, added(twin))
	nwA.HandleEvents(ctx, bt.Removed(lb))
	assertContains(t, fdbLines(t, a.NS, "flannel.1"), fdb)
	assertContains(t, neighLines(t, a.NS, "flannel.1"), "10.244.5.0 lladdr "+macB+" PERMANENT")

	nwA.HandleEvents(ctx, bt.Removed(twin))
	assertLacks(t, fdbLines(t, a.NS, "flannel.1"), macB)
}

// A peer whose MAC moved to another address while an older lease still
// names the old one: the newest lease decides where the MAC's frames go,
// and removing it hands the entry back to the older lease.
func TestSharedMACFollowsNewestLease(t *testing.T) {
	a, b := twoNodes(t, "mac")
	nwA, _ := up(t, a, `{}`, "10.244.1.0/24")
	_, lb := up(t, b, `{}`, "10.244.2.0/24")
	moved := lb
	moved.Subnet = pfx("10.244.6.0/24")
	moved.Attrs.PublicIP = netip.MustParseAddr("198.51.100.66")
	macB := mustMAC(t, lb.Attrs.BackendData)
	nwA.HandleEvents(ctx, added(lb))
	nwA.HandleEvents(ctx, added(moved))
	fdb := fdbLines(t, a.NS, "flannel.1")
	assertContains(t, fdb, macB+" dst 198.51.100.66")
	assertLacks(t, fdb, "198.51.100.12")
	nwA.HandleEvents(ctx, bt.Removed(moved))
	fdb = fdbLines(t, a.NS, "flannel.1")
	assertContains(t, fdb, macB+" dst 198.51.100.12")
	assertLacks(t, fdb, "198.51.100.66")
}

// Dual stack: flannel-v6.1 deleted by hand comes back with its MAC and
// IPv6 address, and b's IPv6 route, neighbour and FDB entry with it; the
// IPv4 half is untouched.
func TestHealDeletedIPv6Device(t *testing.T) {
	h := bt.NewHealPair(t, "tbk-vx-h6", TypeName, true, newBackend(`{}`))
	a, pa, pb, la, lb, rep := h.A, h.PA, h.PB, h.LA, h.LB, h.Rep
	mac6, macB6 := mustMAC(t, la.Attrs.BackendV6Data), mustMAC(t, lb.Attrs.BackendV6Data)

	run(t, "ip", "-n", a.NS, "link", "del", "flannel-v6.1")
	took := bt.WaitFor(t, 2*time.Second, "flannel-v6.1 and b's IPv6 entries restored", func() error {
		return firstErr(
			readOf(addrsOf(a.NS, "flannel-v6.1")).has("\nfd00:10:244:1::/128\n"),
			readOf(routeOf(a.NS, "fd00:10:244:2::/64")).has("via fd00:10:244:2:: dev flannel-v6.1"),
			readOf(neighOf(a.NS, "flannel-v6.1")).has("fd00:10:244:2:: lladdr "+macB6+" PERMANENT"),
			readOf(fdbOf(a.NS, "flannel-v6.1")).has(macB6+" dst fd00:198:51:100::12 dev flannel-v6.1 permanent"),
		)
	})
	t.Logf("flannel-v6.1 re-created and programmed %s after deletion", took)
	assertContains(t, run(t, "ip", "-n", a.NS, "link", "show", "flannel-v6.1"), "link/ether "+mac6)
	if err := bt.TryPing(pa.NS, pb.Addr6, 2*time.Second-took); err != nil {
		t.Fatalf("IPv6 pods do not talk within 2 s of deleting flannel-v6.1: %v", err)
	}
	bt.Ping(t, pa.NS, pb.Addr, 56, false)
	bt.WaitFor(t, time.Second, "the IPv6 repairs counted", func() error {
		if rep.Count("device") < 1 || rep.Count("route") != 1 || rep.Count("fdb") != 1 {
			return fmt.Errorf("repairs device=%d route=%d fdb=%d, want >=1, 1, 1 (the IPv4 half needed none)", rep.Count("device"), rep.Count("route"), rep.Count("fdb"))
		}
		return nil
	})
}
