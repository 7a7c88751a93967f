package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/backend"
	bt "github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
	"golang.org/x/sys/unix"
)

var ctx = context.Background()

func run(t *testing.T, argv ...string) string { t.Helper(); return bt.Run(t, argv...) }

// twoNodes builds tbk-vx-<tag>-a and -b on one bridge, IPv4 only.
func twoNodes(t *testing.T, tag string) (*bt.Node, *bt.Node) {
	t.Helper()
	tn := bt.NewNet(t, "tbk-vx-"+tag)
	seg := tn.Segment("br0", 1500)
	return tn.Node("a", seg, "198.51.100.11/24"), tn.Node("b", seg, "198.51.100.12/24")
}

// up registers and activates an IPv4 network on n with the given subnet and
// returns it with the lease other nodes would see.
func up(t *testing.T, n *bt.Node, raw, subnet string) (backend.Network, lease.Lease) {
	t.Helper()
	return upFamilies(t, n, raw, true, false, subnet, "")
}

func upFamilies(t *testing.T, n *bt.Node, raw string, v4, v6 bool, subnet4, subnet6 string) (backend.Network, lease.Lease) {
	t.Helper()
	be, err := NewWithHandle(n.H, &n.NSH, n.Ext, json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	return bt.Up(t, n, be, bt.BackendConfig(TypeName, v4, v6), subnet4, subnet6)
}

func added(ls ...lease.Lease) []lease.Event { return bt.Added(ls...) }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestDeviceAndPeerShape(t *testing.T) {
	a, b := twoNodes(t, "shape")
	nwA, la := up(t, a, `{"Type":"vxlan"}`, "10.244.1.0/24")
	nwB, lb := up(t, b, `{"Type":"vxlan"}`, "10.244.2.0/24")
	if nwA.MTU() != 1450 {
		t.Fatalf("MTU %d, want 1450 on a 1500 underlay", nwA.MTU())
	}
	if la.Attrs.BackendV6Data != nil {
		t.Errorf("IPv4-only lease carries BackendV6Data %s", la.Attrs.BackendV6Data)
	}
	dev := run(t, "ip", "-d", "-n", a.NS, "link", "show", "flannel.1")
	for _, want := range []string{"mtu 1450", "vxlan id 1", "local 198.51.100.11", "dev eth0", "dstport 8472", "nolearning"} {
		if !strings.Contains(dev, want) {
			t.Errorf("flannel.1 lacks %q:\n%s", want, dev)
		}
	}
	if got := run(t, "ip", "-n", a.NS, "-4", "-o", "addr", "show", "dev", "flannel.1"); !strings.Contains(got, "10.244.1.0/32") {
		t.Errorf("flannel.1 address: %s", got)
	}
	nwA.HandleEvents(ctx, added(lb))
	nwB.HandleEvents(ctx, added(la))

	macB := mustMAC(t, lb.Attrs.BackendData)
	assertLine(t, routeTo(t, a.NS, "10.244.2.0/24"), "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
	assertLine(t, neighLines(t, a.NS, "flannel.1"), "10.244.2.0 lladdr "+macB+" PERMANENT")
	assertLine(t, fdbLines(t, a.NS, "flannel.1"), macB+" dst 198.51.100.12 dev flannel.1 permanent")

	// Encapsulated traffic: A's VTEP address to B's, through the overlay.
	bt.Ping(t, a.NS, netip.MustParseAddr("10.244.2.0"), 56, false)

	nwA.HandleEvents(ctx, bt.Removed(lb))
	if got := routeTo(t, a.NS, "10.244.2.0/24"); got != "" {
		t.Errorf("route left after removal: %s", got)
	}
	if got := neighLines(t, a.NS, "flannel.1"); strings.Contains(got, macB) {
		t.Errorf("neighbour left after removal: %s", got)
	}
	if got := fdbLines(t, a.NS, "flannel.1"); strings.Contains(got, macB) {
		t.Errorf("fdb entry left after removal: %s", got)
	}
}

func mustMAC(t *testing.T, data json.RawMessage) string {
	t.Helper()
	mac, err := decodeLeaseData(data)
	if err != nil {
		t.Fatal(err)
	}
	return mac.String()
}

func assertContains(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("want %q in:\n%s", want, got)
	}
}

// assertLine wants want as one whole line of got (a reading below), so
// that "via 198.51.100.1" does not pass for "via 198.51.100.11".
func assertLine(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, "\n"+want+"\n") {
		t.Errorf("want the line %q in:%s", want, got)
	}
}

// Kernel state, read with internal/tools/kernelstate (the inspector the e2e
// tests, `flannelctl lab check` and doctor share), one entry per line, "\n"
// around each: routes and neighbours as `ip` prints them, FDB entries as
// "<mac> dst <ip> dev <dev> permanent". The t-less forms serve waits, in
// which a device may be missing for a while.
func routeLines(t *testing.T, ns string) string {
	t.Helper()
	return must(t)(lines(ns, func(k *kernelstate.Reader) ([]kernelstate.Route, error) { return k.Routes("", unix.AF_INET) }))
}

// routeTo is the route to dst as one line, "" when there is none.
func routeTo(t *testing.T, ns, dst string) string {
	t.Helper()
	return must(t)(routeOf(ns, dst))
}

func routeOf(ns, dst string) (string, error) {
	s, err := lines(ns, func(k *kernelstate.Reader) ([]kernelstate.Route, error) {
		rt, err := k.HostGWRoute(pfx(dst))
		if rt == nil {
			return nil, err
		}
		return []kernelstate.Route{*rt}, err
	})
	if s == "\n" {
		s = ""
	}
	return s, err
}

func neighLines(t *testing.T, ns, dev string) string {
	t.Helper()
	return must(t)(neighOf(ns, dev))
}

func neighOf(ns, dev string) (string, error) {
	return lines(ns, func(k *kernelstate.Reader) ([]kernelstate.Neighbour, error) {
		d, err := k.Device(dev)
		if err != nil {
			return nil, err
		}
		return k.Neighbours(d.Index, unix.AF_UNSPEC)
	})
}

func fdbLines(t *testing.T, ns, dev string) string {
	t.Helper()
	return must(t)(fdbOf(ns, dev))
}

func fdbOf(ns, dev string) (string, error) {
	return lines(ns, func(k *kernelstate.Reader) ([]kernelstate.FDBEntry, error) {
		d, err := k.Device(dev)
		if err != nil {
			return nil, err
		}
		return k.FDB(d.Index)
	})
}

// addrsOf lists dev's addresses, one a line.
func addrsOf(ns, dev string) (string, error) {
	return lines(ns, func(k *kernelstate.Reader) ([]netip.Prefix, error) {
		d, err := k.Device(dev)
		if err != nil {
			return nil, err
		}
		return d.Addrs, nil
	})
}

// lines reads entries in ns and puts them one a line.
func lines[T fmt.Stringer](ns string, read func(k *kernelstate.Reader) ([]T, error)) (string, error) {
	var xs []T
	err := kernelstate.With(ns, func(k *kernelstate.Reader) (err error) { xs, err = read(k); return err })
	var b strings.Builder
	b.WriteString("\n")
	for _, x := range xs {
		b.WriteString(x.String() + "\n")
	}
	return b.String(), err
}

// must fails the test on a read error.
func must(t *testing.T) func(string, error) string {
	return func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func assertLacks(t *testing.T, got, unwanted string) {
	t.Helper()
	if strings.Contains(got, unwanted) {
		t.Errorf("unwanted %q in:\n%s", unwanted, got)
	}
}

// A restarted daemon adopts the device (same MAC, so peers' FDB entries stay
// valid) and drops state for leases that vanished while it was down.
func TestRestartReusesDeviceAndReconciles(t *testing.T) {
	a, b := twoNodes(t, "rst")
	nwA, la := up(t, a, `{}`, "10.244.1.0/24")
	_, lb := up(t, b, `{}`, "10.244.2.0/24")
	ghost := lease.Lease{Subnet: pfx("10.244.9.0/24"), Attrs: lease.Attrs{
		PublicIP: netip.MustParseAddr("198.51.100.99"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ae:00:00:00:00:99"}`)}}
	nwA.HandleEvents(ctx, added(lb, ghost))
	assertLine(t, routeLines(t, a.NS), "10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink")
	// An FDB entry for a live peer's MAC towards an address it no longer has.
	run(t, "bridge", "-n", a.NS, "fdb", "append", mustMAC(t, lb.Attrs.BackendData), "dev", "flannel.1", "dst", "198.51.100.77", "self", "permanent")

	nwA2, la2 := up(t, a, `{}`, "10.244.1.0/24")
	if mustMAC(t, la2.Attrs.BackendData) != mustMAC(t, la.Attrs.BackendData) {
		t.Fatalf("device recreated on restart: MAC %s became %s", mustMAC(t, la.Attrs.BackendData), mustMAC(t, la2.Attrs.BackendData))
	}
	nwA2.HandleEvents(ctx, added(lb))
	routes := routeLines(t, a.NS)
	assertLacks(t, routes, "10.244.9.0")
	fdb := fdbLines(t, a.NS, "flannel.1")
	assertLacks(t, fdb, "ae:00:00:00:00:99")
	assertLacks(t, fdb, "198.51.100.77")
	assertLine(t, fdb, mustMAC(t, lb.Attrs.BackendData)+" dst 198.51.100.12 dev flannel.1 permanent")
	assertLacks(t, neighLines(t, a.NS, "flannel.1"), "10.244.9.0")
	assertLine(t, routes, "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
}

// A peer whose VTEP MAC changed (its device was recreated) or whose public
// address changed is re-pointed, and the old FDB entry does not linger.
func TestPeerChange(t *testing.T) {
	a, b := twoNodes(t, "chg")
	nwA, _ := up(t, a, `{}`, "10.244.1.0/24")
	_, lb := up(t, b, `{}`, "10.244.2.0/24")
	nwA.HandleEvents(ctx, added(lb))
	old := mustMAC(t, lb.Attrs.BackendData)
	changed := lb
	changed.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"ae:00:00:00:00:42"}`)
	nwA.HandleEvents(ctx, added(changed))
	fdb := fdbLines(t, a.NS, "flannel.1")
	if strings.Contains(fdb, old) || !strings.Contains(fdb, "\nae:00:00:00:00:42 dst 198.51.100.12 dev flannel.1 permanent\n") {
		t.Errorf("fdb after MAC change:\n%s", fdb)
	}
	assertLine(t, neighLines(t, a.NS, "flannel.1"), "10.244.2.0 lladdr ae:00:00:00:00:42 PERMANENT")

	changed.Attrs.PublicIP = netip.MustParseAddr("198.51.100.22")
	nwA.HandleEvents(ctx, added(changed))
	fdb = fdbLines(t, a.NS, "flannel.1")
	assertLine(t, fdb, "ae:00:00:00:00:42 dst 198.51.100.22 dev flannel.1 permanent")
	assertLacks(t, fdb, "198.51.100.12")

	// A lease that no longer describes a usable peer drops what was there.
	broken := changed
	broken.Attrs.BackendType = "host-gw"
	nwA.HandleEvents(ctx, added(broken))
	assertLacks(t, fdbLines(t, a.NS, "flannel.1"), "ae:00:00:00:00:42")
	if got := routeTo(t, a.NS, "10.244.2.0/24"); got != "" {
		t.Errorf("route left for a peer that switched backend: %s", got)
	}
}

func TestDirectRouting(t *testing.T) {
	a, b := twoNodes(t, "dr")
	nwA, _ := up(t, a, `{"DirectRouting":true}`, "10.244.1.0/24")
	_, lb := up(t, b, `{}`, "10.244.2.0/24")
	nwA.HandleEvents(ctx, added(lb))
	assertLine(t, routeTo(t, a.NS, "10.244.2.0/24"), "10.244.2.0/24 via 198.51.100.12 dev eth0")
	assertLacks(t, fdbLines(t, a.NS, "flannel.1"), mustMAC(t, lb.Attrs.BackendData))
}

// With DirectRouting, a peer on the same segment gets a plain route and one
// behind the router goes through the overlay. A peer that moves between
// the two is re-programmed both ways, and pods keep reaching each other.
func TestDirectRoutingAcrossSegments(t *testing.T) {
	tn := bt.NewNet(t, "tbk-vx-drx")
	seg1 := tn.Segment("br1", 1500, "198.51.100.1/24")
	seg2 := tn.Segment("br2", 1500, "203.0.113.1/24")
	a := tn.Node("a", seg1, "198.51.100.11/24")
	b := tn.Node("b", seg1, "198.51.100.12/24")
	c := tn.Node("c", seg2, "203.0.113.13/24")
	const opts = `{"DirectRouting":true}`
	nwA, la := up(t, a, opts, "10.244.1.0/24")
	nwB, lb := up(t, b, opts, "10.244.2.0/24")
	nwC, lc := up(t, c, opts, "10.244.3.0/24")
	pa := tn.Pod(a, nwA.MTU(), pfx("10.244.1.0/24"))
	pb := tn.Pod(b, nwB.MTU(), pfx("10.244.2.0/24"))
	pc := tn.Pod(c, nwC.MTU(), pfx("10.244.3.0/24"))
	nwA.HandleEvents(ctx, added(lb, lc))
	nwB.HandleEvents(ctx, added(la, lc))
	nwC.HandleEvents(ctx, added(la, lb))

	assertLine(t, routeTo(t, a.NS, "10.244.2.0/24"), "10.244.2.0/24 via 198.51.100.12 dev eth0")
	assertLine(t, routeTo(t, a.NS, "10.244.3.0/24"), "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink")
	assertLine(t, fdbLines(t, a.NS, "flannel.1"), mustMAC(t, lc.Attrs.BackendData)+" dst 203.0.113.13 dev flannel.1 permanent")
	bt.Ping(t, pa.NS, pb.Addr, 56, false)
	bt.Ping(t, pa.NS, pc.Addr, 56, false)

	// b moves behind the router: its VTEP is recreated with the new local
	// address (new MAC), and a must switch it to the overlay.
	oldMAC := mustMAC(t, lb.Attrs.BackendData)
	b.Move(seg2, "203.0.113.12/24")
	nwB, lb = up(t, b, opts, "10.244.2.0/24")
	nwB.HandleEvents(ctx, added(la, lc))
	nwA.HandleEvents(ctx, added(lb))
	newMAC := mustMAC(t, lb.Attrs.BackendData)
	assertLine(t, routeTo(t, a.NS, "10.244.2.0/24"), "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
	assertLine(t, neighLines(t, a.NS, "flannel.1"), "10.244.2.0 lladdr "+newMAC+" PERMANENT")
	fdb := fdbLines(t, a.NS, "flannel.1")
	assertLine(t, fdb, newMAC+" dst 203.0.113.12 dev flannel.1 permanent")
	assertLacks(t, fdb, oldMAC)
	assertLacks(t, routeLines(t, a.NS), "via 198.51.100.12")
	bt.Ping(t, pa.NS, pb.Addr, 56, false)

	// And back onto a's segment: direct again, overlay state gone.
	b.Move(seg1, "198.51.100.12/24")
	nwB, lb = up(t, b, opts, "10.244.2.0/24")
	nwB.HandleEvents(ctx, added(la, lc))
	nwA.HandleEvents(ctx, added(lb))
	assertLine(t, routeTo(t, a.NS, "10.244.2.0/24"), "10.244.2.0/24 via 198.51.100.12 dev eth0")
	assertLacks(t, neighLines(t, a.NS, "flannel.1"), "10.244.2.0 ")
	fdb = fdbLines(t, a.NS, "flannel.1")
	assertLacks(t, fdb, newMAC)
	assertLacks(t, fdb, "203.0.113.12")
	bt.Ping(t, pa.NS, pb.Addr, 56, false)
	bt.Ping(t, pa.NS, pc.Addr, 56, false)
}

// IPv6-only: a flannel-v6.1 device over the IPv6 underlay, peers programmed
// from the IPv6 half of their leases.
func TestIPv6Only(t *testing.T) {
	tn := bt.NewNet(t, "tbk-vx-v6")
	seg := tn.Segment("br0", 1500)
	a := tn.Node("a", seg, "fd00:198:51:100::11/64")
	b := tn.Node("b", seg, "fd00:198:51:100::12/64")
	nwA, la := upFamilies(t, a, `{}`, false, true, "", "fd00:10:244:1::/64")
	nwB, lb := upFamilies(t, b, `{}`, false, true, "", "fd00:10:244:2::/64")
	if nwA.MTU() != 1430 {
		t.Errorf("MTU %d, want 1430 (1500 - 70) over an IPv6 underlay", nwA.MTU())
	}
	if la.Attrs.BackendData != nil || la.Attrs.BackendV6Data == nil {
		t.Errorf("IPv6-only lease attrs: BackendData %s, BackendV6Data %s", la.Attrs.BackendData, la.Attrs.BackendV6Data)
	}
	if _, err := a.H.LinkByName("flannel.1"); err == nil {
		t.Error("IPv6-only network created flannel.1")
	}
	dev := run(t, "ip", "-d", "-n", a.NS, "link", "show", "flannel-v6.1")
	for _, want := range []string{"mtu 1430", "vxlan id 1", "local fd00:198:51:100::11", "dev eth0", "dstport 8472", "nolearning"} {
		assertContains(t, dev, want)
	}
	assertContains(t, run(t, "ip", "-n", a.NS, "-6", "-o", "addr", "show", "dev", "flannel-v6.1"), "fd00:10:244:1::/128")
	pa := tn.Pod(a, nwA.MTU(), pfx("fd00:10:244:1::/64"))
	pb := tn.Pod(b, nwB.MTU(), pfx("fd00:10:244:2::/64"))
	nwA.HandleEvents(ctx, added(lb))
	nwB.HandleEvents(ctx, added(la))

	macB := mustMAC(t, lb.Attrs.BackendV6Data)
	assertLine(t, routeTo(t, a.NS, "fd00:10:244:2::/64"), "fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink")
	assertLine(t, neighLines(t, a.NS, "flannel-v6.1"), "fd00:10:244:2:: lladdr "+macB+" PERMANENT")
	assertLine(t, fdbLines(t, a.NS, "flannel-v6.1"), macB+" dst fd00:198:51:100::12 dev flannel-v6.1 permanent")
	bt.Ping(t, pa.NS, pb.Addr6, 56, false)
	bt.Ping(t, pa.NS, pb.Addr6, 1382, true) // 1430 - 40 - 8: a full-size packet

	nwA.HandleEvents(ctx, bt.Removed(lb))
	if got := routeTo(t, a.NS, "fd00:10:244:2::/64"); got != "" {
		t.Errorf("route left after removal: %s", got)
	}
	assertLacks(t, fdbLines(t, a.NS, "flannel-v6.1"), macB)
	assertLacks(t, neighLines(t, a.NS, "flannel-v6.1"), macB)
}

// Dual stack: IPv4 over the IPv4 underlay on flannel.1 and IPv6 over the
// IPv6 underlay on flannel-v6.1; pods get the smaller MTU. Then DirectRouting
// turns on after a restart: both families switch to plain routes, and the
// overlay state of the earlier run is cleaned up.
func TestDualStack(t *testing.T) {
	tn := bt.NewNet(t, "tbk-vx-ds")
	seg := tn.Segment("br0", 1500)
	a := tn.Node("a", seg, "198.51.100.11/24", "fd00:198:51:100::11/64")
	b := tn.Node("b", seg, "198.51.100.12/24", "fd00:198:51:100::12/64")
	nwA, la := upFamilies(t, a, `{}`, true, true, "10.244.1.0/24", "fd00:10:244:1::/64")
	nwB, lb := upFamilies(t, b, `{}`, true, true, "10.244.2.0/24", "fd00:10:244:2::/64")
	if nwA.MTU() != 1430 {
		t.Errorf("dual-stack MTU %d, want min(1450, 1430)", nwA.MTU())
	}
	assertContains(t, run(t, "ip", "-n", a.NS, "link", "show", "flannel.1"), "mtu 1450")
	assertContains(t, run(t, "ip", "-n", a.NS, "link", "show", "flannel-v6.1"), "mtu 1430")
	if mustMAC(t, la.Attrs.BackendData) == mustMAC(t, la.Attrs.BackendV6Data) {
		t.Errorf("both devices report MAC %s", mustMAC(t, la.Attrs.BackendData))
	}
	pa := tn.Pod(a, nwA.MTU(), pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64"))
	pb := tn.Pod(b, nwB.MTU(), pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64"))
	nwA.HandleEvents(ctx, added(lb))
	nwB.HandleEvents(ctx, added(la))
	assertLine(t, routeTo(t, a.NS, "10.244.2.0/24"), "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
	assertLine(t, routeTo(t, a.NS, "fd00:10:244:2::/64"), "fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink")
	assertLine(t, fdbLines(t, a.NS, "flannel.1"), mustMAC(t, lb.Attrs.BackendData)+" dst 198.51.100.12 dev flannel.1 permanent")
	assertLine(t, fdbLines(t, a.NS, "flannel-v6.1"), mustMAC(t, lb.Attrs.BackendV6Data)+" dst fd00:198:51:100::12 dev flannel-v6.1 permanent")
	bt.Ping(t, pa.NS, pb.Addr, 56, false)
	bt.Ping(t, pa.NS, pb.Addr6, 56, false)

	nwA2, _ := upFamilies(t, a, `{"DirectRouting":true}`, true, true, "10.244.1.0/24", "fd00:10:244:1::/64")
	nwA2.HandleEvents(ctx, added(lb))
	assertLine(t, routeTo(t, a.NS, "10.244.2.0/24"), "10.244.2.0/24 via 198.51.100.12 dev eth0")
	assertLine(t, routeTo(t, a.NS, "fd00:10:244:2::/64"), "fd00:10:244:2::/64 via fd00:198:51:100::12 dev eth0")
	assertLacks(t, fdbLines(t, a.NS, "flannel-v6.1"), mustMAC(t, lb.Attrs.BackendV6Data))
	assertLacks(t, neighLines(t, a.NS, "flannel-v6.1"), "fd00:10:244:2::")
	bt.Ping(t, pa.NS, pb.Addr, 56, false)
	bt.Ping(t, pa.NS, pb.Addr6, 56, false)
}

// A 9000-byte underlay gives 8950-byte pods, and full-size packets cross
// the overlay unfragmented; the Backend MTU key replaces the underlay MTU,
// as upstream reads it, so {"MTU":1400} gives a 1350-byte device.
func TestJumboMTUAndOverride(t *testing.T) {
	tn := bt.NewNet(t, "tbk-vx-mtu")
	seg := tn.Segment("br0", 9000)
	a := tn.Node("a", seg, "198.51.100.11/24")
	b := tn.Node("b", seg, "198.51.100.12/24")
	nwA, la := up(t, a, `{}`, "10.244.1.0/24")
	nwB, lb := up(t, b, `{}`, "10.244.2.0/24")
	if nwA.MTU() != 8950 {
		t.Fatalf("MTU %d on a 9000 underlay, want 8950", nwA.MTU())
	}
	assertContains(t, run(t, "ip", "-n", a.NS, "link", "show", "flannel.1"), "mtu 8950")
	pa := tn.Pod(a, nwA.MTU(), pfx("10.244.1.0/24"))
	pb := tn.Pod(b, nwB.MTU(), pfx("10.244.2.0/24"))
	nwA.HandleEvents(ctx, added(lb))
	nwB.HandleEvents(ctx, added(la))
	bt.Ping(t, pa.NS, pb.Addr, 8922, true)   // 8950 - 20 - 8
	bt.NoPing(t, pa.NS, pb.Addr, 8923, true) // one byte over the pod MTU

	nwO, _ := up(t, a, `{"MTU":1400}`, "10.244.1.0/24")
	if nwO.MTU() != 1350 {
		t.Errorf("MTU key 1400 (the underlay's) gave %d, want 1350", nwO.MTU())
	}
	assertContains(t, run(t, "ip", "-n", a.NS, "link", "show", "flannel.1"), "mtu 1350")
}

// The Backend MTU key is the underlay MTU for both families, as upstream
// reads it: the devices (and so FLANNEL_MTU) get it less the overhead, 50
// bytes over IPv4 and 70 over IPv6; without the key the external
// interface's MTU is the underlay MTU.
func TestMTUKeyIsUnderlayMTU(t *testing.T) {
	ext := &backend.ExternalInterface{
		Iface:     &net.Interface{Name: "eth0", Index: 1, MTU: 9000},
		IfaceAddr: netip.MustParseAddr("198.51.100.11"), IfaceV6Addr: netip.MustParseAddr("fd00:198:51:100::11"),
	}
	for _, tc := range []struct {
		raw      string
		v6       bool
		wantName string
		wantMTU  int
	}{
		{`{}`, false, "flannel.1", 8950},
		{`{}`, true, "flannel-v6.1", 8930},
		{`{"MTU":1400}`, false, "flannel.1", 1350},
		{`{"MTU":1400}`, true, "flannel-v6.1", 1330},
		{`{"MTU":1500,"VNI":7}`, false, "flannel.7", 1450},
	} {
		be, err := NewWithHandle(nil, nil, ext, json.RawMessage(tc.raw))
		if err != nil {
			t.Fatal(err)
		}
		s, err := be.spec(tc.v6)
		if err != nil {
			t.Fatalf("%s v6=%v: %v", tc.raw, tc.v6, err)
		}
		if s.name != tc.wantName || s.mtu != tc.wantMTU {
			t.Errorf("%s v6=%v: device %s MTU %d, want %s MTU %d", tc.raw, tc.v6, s.name, s.mtu, tc.wantName, tc.wantMTU)
		}
	}
}

// Settings that cannot work fail before any device is touched.
func TestRegisterRefuses(t *testing.T) {
	ext := &backend.ExternalInterface{
		Iface:     &net.Interface{Name: "eth0", Index: 1, MTU: 1500},
		IfaceAddr: netip.MustParseAddr("198.51.100.11"), IfaceV6Addr: netip.MustParseAddr("fd00:198:51:100::11"),
	}
	v4only := &backend.ExternalInterface{Iface: ext.Iface, IfaceAddr: ext.IfaceAddr}
	v6only := &backend.ExternalInterface{Iface: ext.Iface, IfaceV6Addr: ext.IfaceV6Addr}
	small := &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", Index: 1, MTU: 1340}, IfaceAddr: ext.IfaceAddr, IfaceV6Addr: ext.IfaceV6Addr}
	for _, tc := range []struct {
		name   string
		ext    *backend.ExternalInterface
		raw    string
		v4, v6 bool
		want   string
	}{
		{"dual stack, MTU option below IPv6 minimum", ext, `{"MTU":1000}`, true, true, "below the IPv6 minimum"},
		{"IPv6 on a 1340 underlay", small, `{}`, false, true, "MTU 1270 for flannel-v6.1 (underlay MTU 1340"},
		{"IPv6 without an IPv6 address", v4only, `{}`, true, true, "eth0 has no IPv6 address"},
		{"IPv4 without an IPv4 address", v6only, `{}`, true, false, "eth0 has no IPv4 address"},
		{"no family", ext, `{}`, false, false, "neither"},
	} {
		be, err := NewWithHandle(nil, nil, tc.ext, json.RawMessage(tc.raw))
		if err != nil {
			t.Fatal(err)
		}
		_, err = be.RegisterNetwork(ctx, bt.BackendConfig(TypeName, tc.v4, tc.v6))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestOptions(t *testing.T) {
	for raw, wantErr := range map[string]bool{
		`{}`: false, `{"VNI":4096,"Port":4789,"GBP":true,"MTU":1400}`: false,
		`{"VNI":-1}`: true, `{"VNI":16777216}`: true, `{"Port":70000}`: true, `{"MTU":100}`: true, `{"VNI":"x"}`: true,
	} {
		_, err := parseOptions(json.RawMessage(raw))
		if (err != nil) != wantErr {
			t.Errorf("parseOptions(%s) error = %v, want error %v", raw, err, wantErr)
		}
	}
	o, _ := parseOptions(nil)
	if o.VNI != 1 || o.Port != 0 {
		t.Errorf("defaults: %+v", o)
	}
	if _, err := decodeLeaseData(json.RawMessage(`{"VNI":1,"VtepMAC":"zz"}`)); err == nil {
		t.Error("bad VtepMAC accepted")
	}
}
