package vxlan

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// testNode is a namespace with eth0 on a shared veth link, standing in for
// a flannel node.
type testNode struct {
	ns   string
	h    *netlink.Handle
	ext  *backend.ExternalInterface
	addr netip.Addr
}

func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// twoNodes creates tvx-<tag>-a and -b joined by a veth pair, never touching
// the root namespace.
func twoNodes(t *testing.T, tag string) (*testNode, *testNode) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	a, b := "tvx-"+tag+"-a", "tvx-"+tag+"-b"
	for _, ns := range []string{a, b} {
		exec.Command("ip", "netns", "del", ns).Run()
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	return mkNode(t, a, "198.51.100.11"), mkNode(t, b, "198.51.100.12")
}

func mkNode(t *testing.T, ns, addr string) *testNode {
	t.Helper()
	run(t, "ip", "-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(addr)
	iface := &net.Interface{Name: "eth0", Index: link.Attrs().Index, MTU: link.Attrs().MTU}
	return &testNode{ns: ns, h: h, addr: ip, ext: &backend.ExternalInterface{Iface: iface, IfaceAddr: ip, ExtAddr: ip}}
}

func testConfig(t *testing.T) *config.Config {
	return &config.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24, BackendType: "vxlan"}
}

// up registers and activates a network on n with the given subnet and
// returns it with the lease other nodes would see.
func up(t *testing.T, n *testNode, raw, subnet string) (backend.Network, lease.Lease) {
	t.Helper()
	be, err := NewWithHandle(n.h, n.ext, json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	nw, err := be.RegisterNetwork(context.Background(), testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	attrs := nw.LeaseAttrs()
	attrs.PublicIP = n.addr
	l := lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: attrs}
	if err := nw.Activate(context.Background(), &l); err != nil {
		t.Fatal(err)
	}
	return nw, l
}

func added(ls ...lease.Lease) []lease.Event {
	var evs []lease.Event
	for _, l := range ls {
		evs = append(evs, lease.Event{Type: lease.Added, Lease: l})
	}
	return evs
}

func TestDeviceAndPeerShape(t *testing.T) {
	a, b := twoNodes(t, "shape")
	nwA, la := up(t, a, `{"Type":"vxlan"}`, "10.244.1.0/24")
	nwB, lb := up(t, b, `{"Type":"vxlan"}`, "10.244.2.0/24")
	if nwA.MTU() != 1450 {
		t.Fatalf("MTU %d, want 1450 on a 1500 underlay", nwA.MTU())
	}
	dev := run(t, "ip", "-d", "-n", a.ns, "link", "show", "flannel.1")
	for _, want := range []string{"mtu 1450", "vxlan id 1", "local 198.51.100.11", "dev eth0", "dstport 8472", "nolearning"} {
		if !strings.Contains(dev, want) {
			t.Errorf("flannel.1 lacks %q:\n%s", want, dev)
		}
	}
	if got := run(t, "ip", "-n", a.ns, "-4", "-o", "addr", "show", "dev", "flannel.1"); !strings.Contains(got, "10.244.1.0/32") {
		t.Errorf("flannel.1 address: %s", got)
	}
	nwA.HandleEvents(context.Background(), added(lb))
	nwB.HandleEvents(context.Background(), added(la))

	macB := mustMAC(t, lb)
	assertContains(t, run(t, "ip", "-n", a.ns, "route", "show", "10.244.2.0/24"), "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
	assertContains(t, run(t, "ip", "-n", a.ns, "neigh", "show", "dev", "flannel.1"), "10.244.2.0 lladdr "+macB+" PERMANENT")
	assertContains(t, run(t, "bridge", "-n", a.ns, "fdb", "show", "dev", "flannel.1"), macB+" dst 198.51.100.12 self permanent")

	// Encapsulated traffic: A's VTEP address to B's, through the overlay.
	run(t, "ip", "netns", "exec", a.ns, "ping", "-c1", "-W2", "10.244.2.0")

	nwA.HandleEvents(context.Background(), []lease.Event{{Type: lease.Removed, Lease: lb}})
	if got := run(t, "ip", "-n", a.ns, "route", "show", "10.244.2.0/24"); got != "" {
		t.Errorf("route left after removal: %s", got)
	}
	if got := run(t, "ip", "-n", a.ns, "neigh", "show", "dev", "flannel.1"); strings.Contains(got, macB) {
		t.Errorf("neighbour left after removal: %s", got)
	}
	if got := run(t, "bridge", "-n", a.ns, "fdb", "show", "dev", "flannel.1"); strings.Contains(got, macB) {
		t.Errorf("fdb entry left after removal: %s", got)
	}
}

func mustMAC(t *testing.T, l lease.Lease) string {
	t.Helper()
	mac, err := decodeLeaseData(l.Attrs.BackendData)
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

// A restarted daemon adopts the device (same MAC, so peers' FDB entries stay
// valid) and drops state for leases that vanished while it was down.
func TestRestartReusesDeviceAndReconciles(t *testing.T) {
	a, b := twoNodes(t, "rst")
	nwA, la := up(t, a, `{}`, "10.244.1.0/24")
	_, lb := up(t, b, `{}`, "10.244.2.0/24")
	ghost := lease.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24"), Attrs: lease.Attrs{
		PublicIP: netip.MustParseAddr("198.51.100.99"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ae:00:00:00:00:99"}`)}}
	nwA.HandleEvents(context.Background(), added(lb, ghost))
	assertContains(t, run(t, "ip", "-n", a.ns, "route"), "10.244.9.0/24")

	nwA2, la2 := up(t, a, `{}`, "10.244.1.0/24")
	if mustMAC(t, la2) != mustMAC(t, la) {
		t.Fatalf("device recreated on restart: MAC %s became %s", mustMAC(t, la), mustMAC(t, la2))
	}
	nwA2.HandleEvents(context.Background(), added(lb))
	routes := run(t, "ip", "-n", a.ns, "route")
	if strings.Contains(routes, "10.244.9.0") {
		t.Errorf("stale route survived restart:\n%s", routes)
	}
	if got := run(t, "bridge", "-n", a.ns, "fdb", "show", "dev", "flannel.1"); strings.Contains(got, "ae:00:00:00:00:99") {
		t.Errorf("stale fdb entry survived restart:\n%s", got)
	}
	if got := run(t, "ip", "-n", a.ns, "neigh", "show", "dev", "flannel.1"); strings.Contains(got, "10.244.9.0") {
		t.Errorf("stale neighbour survived restart:\n%s", got)
	}
	assertContains(t, routes, "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
}

// A peer whose VTEP MAC changed (its device was recreated) is re-pointed,
// and the old FDB entry does not linger.
func TestPeerChange(t *testing.T) {
	a, b := twoNodes(t, "chg")
	nwA, _ := up(t, a, `{}`, "10.244.1.0/24")
	_, lb := up(t, b, `{}`, "10.244.2.0/24")
	nwA.HandleEvents(context.Background(), added(lb))
	old := mustMAC(t, lb)
	changed := lb
	changed.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"ae:00:00:00:00:42"}`)
	nwA.HandleEvents(context.Background(), added(changed))
	fdb := run(t, "bridge", "-n", a.ns, "fdb", "show", "dev", "flannel.1")
	if strings.Contains(fdb, old) || !strings.Contains(fdb, "ae:00:00:00:00:42 dst 198.51.100.12") {
		t.Errorf("fdb after MAC change:\n%s", fdb)
	}
}

func TestDirectRouting(t *testing.T) {
	a, b := twoNodes(t, "dr")
	nwA, _ := up(t, a, `{"DirectRouting":true}`, "10.244.1.0/24")
	_, lb := up(t, b, `{}`, "10.244.2.0/24")
	nwA.HandleEvents(context.Background(), added(lb))
	assertContains(t, run(t, "ip", "-n", a.ns, "route", "show", "10.244.2.0/24"), "10.244.2.0/24 via 198.51.100.12 dev eth0")
	if got := run(t, "bridge", "-n", a.ns, "fdb", "show", "dev", "flannel.1"); strings.Contains(got, mustMAC(t, lb)) {
		t.Errorf("direct peer got an fdb entry:\n%s", got)
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
