package hostgw

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
)

var ctx = context.Background()

// up starts host-gw on n with the given options and own subnets.
func up(t *testing.T, n *bt.Node, raw string, v4, v6 bool, subnet4, subnet6 string) (backend.Network, lease.Lease) {
	t.Helper()
	be, err := NewWithHandle(n.H, n.Ext, json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	return bt.Up(t, n, be, bt.BackendConfig(TypeName, v4, v6), subnet4, subnet6)
}

// routes is n's route to dst in `ip route` form ("" when none), read with
// internal/tools/kernelstate; family ("-4", "-6") only documents the call.
func routes(t *testing.T, n *bt.Node, _, dst string) string {
	t.Helper()
	var rt *kernelstate.Route
	err := kernelstate.With(n.NS, func(k *kernelstate.Reader) (err error) { rt, err = k.HostGWRoute(pfx(dst)); return err })
	if err != nil {
		t.Fatal(err)
	}
	if rt == nil {
		return ""
	}
	return rt.String()
}

// wantRoute wants exactly this route (so that "via 198.51.100.1" cannot
// pass for "via 198.51.100.11").
func wantRoute(t *testing.T, n *bt.Node, family, dst, want string) {
	t.Helper()
	if got := routes(t, n, family, dst); got != want {
		t.Errorf("%s: route for %s is %q, want %q", n.Name, dst, got, want)
	}
}

func wantNoRoute(t *testing.T, n *bt.Node, family, dst string) {
	t.Helper()
	if got := routes(t, n, family, dst); got != "" {
		t.Errorf("%s: unexpected route for %s: %q", n.Name, dst, got)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// Three dual-stack nodes on one bridge: each gets plain routes to the
// others' subnets through their underlay addresses, and pods talk across.
func TestOneSegmentDualStack(t *testing.T) {
	tn := bt.NewNet(t, "tbk-hg-seg")
	seg := tn.Segment("br0", 1500)
	names := []string{"a", "b", "c"}
	nodes := make([]*bt.Node, 3)
	nws := make([]backend.Network, 3)
	leases := make([]lease.Lease, 3)
	pods := make([]*bt.Pod, 3)
	for i, name := range names {
		nodes[i] = tn.Node(name, seg, fmt.Sprintf("198.51.100.%d/24", 11+i), fmt.Sprintf("fd00:198:51:100::%d/64", 11+i))
		s4, s6 := fmt.Sprintf("10.244.%d.0/24", 1+i), fmt.Sprintf("fd00:10:244:%d::/64", 1+i)
		nws[i], leases[i] = up(t, nodes[i], `{"Type":"host-gw"}`, true, true, s4, s6)
		pods[i] = tn.Pod(nodes[i], nws[i].MTU(), pfx(s4), pfx(s6))
	}
	if nws[0].MTU() != 1500 {
		t.Errorf("MTU %d, want the underlay's 1500", nws[0].MTU())
	}
	if a := nws[0].LeaseAttrs(); a.BackendType != "host-gw" || a.BackendData != nil {
		t.Errorf("lease attrs %+v", a)
	}
	for i, nw := range nws {
		var others []lease.Lease
		for j, l := range leases {
			if j != i {
				others = append(others, l)
			}
		}
		nw.HandleEvents(ctx, bt.Added(others...))
	}
	a := nodes[0]
	wantRoute(t, a, "-4", "10.244.2.0/24", "10.244.2.0/24 via 198.51.100.12 dev eth0")
	wantRoute(t, a, "-4", "10.244.3.0/24", "10.244.3.0/24 via 198.51.100.13 dev eth0")
	wantRoute(t, a, "-6", "fd00:10:244:2::/64", "fd00:10:244:2::/64 via fd00:198:51:100::12 dev eth0")
	wantRoute(t, a, "-6", "fd00:10:244:3::/64", "fd00:10:244:3::/64 via fd00:198:51:100::13 dev eth0")
	for i := range pods {
		for j := range pods {
			if i != j {
				bt.Ping(t, pods[i].NS, pods[j].Addr, 56, false)
				bt.Ping(t, pods[i].NS, pods[j].Addr6, 56, false)
			}
		}
	}

	nws[0].HandleEvents(ctx, bt.Removed(leases[2]))
	wantNoRoute(t, a, "-4", "10.244.3.0/24")
	wantNoRoute(t, a, "-6", "fd00:10:244:3::/64")
	bt.NoPing(t, pods[0].NS, pods[2].Addr, 56, false) // c's lease is gone
	bt.Ping(t, pods[0].NS, pods[1].Addr, 56, false)
}

func TestIPv6Only(t *testing.T) {
	tn := bt.NewNet(t, "tbk-hg-v6")
	seg := tn.Segment("br0", 1500)
	a := tn.Node("a", seg, "fd00:198:51:100::11/64")
	b := tn.Node("b", seg, "fd00:198:51:100::12/64")
	nwA, la := up(t, a, `{}`, false, true, "", "fd00:10:244:1::/64")
	nwB, lb := up(t, b, `{}`, false, true, "", "fd00:10:244:2::/64")
	pa := tn.Pod(a, nwA.MTU(), pfx("fd00:10:244:1::/64"))
	pb := tn.Pod(b, nwB.MTU(), pfx("fd00:10:244:2::/64"))
	nwA.HandleEvents(ctx, bt.Added(lb))
	nwB.HandleEvents(ctx, bt.Added(la))
	wantRoute(t, a, "-6", "fd00:10:244:2::/64", "fd00:10:244:2::/64 via fd00:198:51:100::12 dev eth0")
	bt.Ping(t, pa.NS, pb.Addr6, 56, false)
}

// A peer behind a router is reported once, by subnet and address, with
// advice; it gets no route. When it joins the segment it gets one, and
// when it leaves again the route goes.
func TestPeerOffSegment(t *testing.T) {
	logs := bt.CaptureLogs(t)
	tn := bt.NewNet(t, "tbk-hg-x")
	seg1 := tn.Segment("br1", 1500, "198.51.100.1/24")
	seg2 := tn.Segment("br2", 1500, "203.0.113.1/24")
	a := tn.Node("a", seg1, "198.51.100.11/24")
	b := tn.Node("b", seg1, "198.51.100.12/24")
	c := tn.Node("c", seg2, "203.0.113.13/24")
	nwA, _ := up(t, a, `{}`, true, false, "10.244.1.0/24", "")
	_, lb := up(t, b, `{}`, true, false, "10.244.2.0/24", "")
	_, lc := up(t, c, `{}`, true, false, "10.244.3.0/24", "")
	// The underlay itself routes: c is reachable, just not on a's segment.
	bt.Ping(t, a.NS, c.Addr, 56, false)

	nwA.HandleEvents(ctx, bt.Added(lb, lc))
	nwA.HandleEvents(ctx, bt.Added(lb, lc)) // a re-list after a watch gap
	nwA.HandleEvents(ctx, bt.Added(lc))
	wantRoute(t, a, "-4", "10.244.2.0/24", "10.244.2.0/24 via 198.51.100.12 dev eth0")
	wantNoRoute(t, a, "-4", "10.244.3.0/24")
	errs := logs.Errors("10.244.3.0/24", "203.0.113.13", "198.51.100.11", "not on this node's L2 segment", "vxlan", "DirectRouting")
	if len(errs) != 1 {
		t.Fatalf("want the off-segment error logged exactly once, got %d: %q (all errors: %q)", len(errs), errs, logs.Errors())
	}
	t.Logf("logged: %s", errs[0])

	c.Move(seg1, "198.51.100.13/24")
	lc.Attrs.PublicIP = c.Addr
	nwA.HandleEvents(ctx, bt.Added(lc))
	wantRoute(t, a, "-4", "10.244.3.0/24", "10.244.3.0/24 via 198.51.100.13 dev eth0")

	c.Move(seg2, "203.0.113.13/24")
	lc.Attrs.PublicIP = c.Addr
	nwA.HandleEvents(ctx, bt.Added(lc))
	wantNoRoute(t, a, "-4", "10.244.3.0/24")
	if n := len(logs.Errors("10.244.3.0/24", "203.0.113.13")); n != 2 {
		t.Errorf("after moving off the segment again: %d errors, want a second one", n)
	}
}

// A restarted daemon's first batch is complete: routes of its earlier run
// for peers that are gone are removed; routes that are not ours are kept.
func TestStaleRoutesAfterRestart(t *testing.T) {
	tn := bt.NewNet(t, "tbk-hg-rst")
	seg := tn.Segment("br0", 1500)
	a := tn.Node("a", seg, "198.51.100.11/24")
	b := tn.Node("b", seg, "198.51.100.12/24")
	c := tn.Node("c", seg, "198.51.100.13/24")
	nwA, _ := up(t, a, `{}`, true, false, "10.244.1.0/24", "")
	_, lb := up(t, b, `{}`, true, false, "10.244.2.0/24", "")
	_, lc := up(t, c, `{}`, true, false, "10.244.3.0/24", "")
	nwA.HandleEvents(ctx, bt.Added(lb, lc))
	wantRoute(t, a, "-4", "10.244.3.0/24", "10.244.3.0/24 via 198.51.100.13 dev eth0")
	bt.Run(t, "ip", "-n", a.NS, "route", "add", "10.244.8.0/24", "via", "198.51.100.98", "dev", "eth0", "proto", "static")
	bt.Run(t, "ip", "-n", a.NS, "route", "add", "10.244.9.0/24", "via", "198.51.100.99", "dev", "eth0")

	nwA2, _ := up(t, a, `{}`, true, false, "10.244.1.0/24", "")
	nwA2.HandleEvents(ctx, bt.Added(lb))
	wantRoute(t, a, "-4", "10.244.2.0/24", "10.244.2.0/24 via 198.51.100.12 dev eth0")
	wantNoRoute(t, a, "-4", "10.244.3.0/24")
	wantNoRoute(t, a, "-4", "10.244.9.0/24")
	wantRoute(t, a, "-4", "10.244.8.0/24", "10.244.8.0/24 via 198.51.100.98 dev eth0") // someone else's (proto static) stays
}

func TestOptionsAndMTU(t *testing.T) {
	for raw, wantErr := range map[string]bool{`{}`: false, `{"Type":"host-gw"}`: false, `{"MTU":1400}`: false, `{"MTU":100}`: true, `{"MTU":"x"}`: true} {
		if _, err := parseOptions(json.RawMessage(raw)); (err != nil) != wantErr {
			t.Errorf("parseOptions(%s) error = %v, want error %v", raw, err, wantErr)
		}
	}
	ext := &backend.ExternalInterface{
		Iface:     &net.Interface{Name: "eth0", Index: 1, MTU: 9000},
		IfaceAddr: netip.MustParseAddr("198.51.100.11"), IfaceV6Addr: netip.MustParseAddr("fd00:198:51:100::11"),
	}
	for _, tc := range []struct {
		raw     string
		v4, v6  bool
		wantMTU int // 0: want an error
	}{
		{`{}`, true, false, 9000},
		{`{}`, true, true, 9000},
		{`{"MTU":1400}`, true, false, 1400},
		{`{"MTU":9001}`, true, false, 0},
		{`{"MTU":1000}`, true, true, 0},
	} {
		be, err := NewWithHandle(nil, ext, json.RawMessage(tc.raw))
		if err != nil {
			t.Fatal(err)
		}
		nw, err := be.RegisterNetwork(ctx, bt.BackendConfig(TypeName, tc.v4, tc.v6))
		switch {
		case tc.wantMTU == 0 && err == nil:
			t.Errorf("%s v4=%v v6=%v: no error, MTU %d", tc.raw, tc.v4, tc.v6, nw.MTU())
		case tc.wantMTU != 0 && err != nil:
			t.Errorf("%s v4=%v v6=%v: %v", tc.raw, tc.v4, tc.v6, err)
		case tc.wantMTU != 0 && nw.MTU() != tc.wantMTU:
			t.Errorf("%s v4=%v v6=%v: MTU %d, want %d", tc.raw, tc.v4, tc.v6, nw.MTU(), tc.wantMTU)
		}
	}
	noV6 := &backend.ExternalInterface{Iface: ext.Iface, IfaceAddr: ext.IfaceAddr}
	be, _ := NewWithHandle(nil, noV6, nil)
	if _, err := be.RegisterNetwork(ctx, bt.BackendConfig(TypeName, true, true)); err == nil || !strings.Contains(err.Error(), "no IPv6 address") {
		t.Errorf("dual stack without an IPv6 address on the interface: %v", err)
	}
}
