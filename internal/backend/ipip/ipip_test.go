package ipip

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/lease"
)

// This kernel has no ipip module, so the backend's peer logic is tested
// through its route writer: a routing table in memory.
type fakeKernel struct {
	routes map[netip.Prefix]netlink.Route
}

func (k *fakeKernel) Replace(r *netlink.Route) error {
	dst, _ := ipnet.Prefix(r.Dst)
	c := *r
	c.Protocol = unix.RTPROT_BOOT
	k.routes[dst] = c
	return nil
}

func (k *fakeKernel) Delete(r *netlink.Route) error {
	dst, _ := ipnet.Prefix(r.Dst)
	if have, ok := k.routes[dst]; ok && (r.Gw == nil || have.Gw.Equal(r.Gw)) {
		delete(k.routes, dst)
	}
	return nil
}

func (k *fakeKernel) Visit(family, link int, f func(netlink.Route) bool) error {
	for _, r := range k.routes {
		if r.LinkIndex == link && !f(r) {
			break
		}
	}
	return nil
}

func (k *fakeKernel) route(t *testing.T, dst string) netlink.Route {
	t.Helper()
	r, ok := k.routes[netip.MustParsePrefix(dst)]
	if !ok {
		t.Fatalf("no route to %s in %v", dst, k.routes)
	}
	return r
}

func ipipLease(subnet, public string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{BackendType: TypeName, PublicIP: netip.MustParseAddr(public)}}
}

func testNetwork(k *fakeKernel) *network {
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, Name: "eth0", MTU: 1500}, IfaceAddr: netip.MustParseAddr("198.51.100.11")}
	b := &Backend{Tunnel: backend.Tunnel[Options]{Ext: ext}}
	dev := &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Index: 7, Name: DeviceName}}
	return newNetwork(b, k, dev, ext.IfaceAddr, 1480, netip.MustParsePrefix("10.244.0.0/16"))
}

// Each peer gets "<subnet> via <public address> dev flannel.ipip onlink";
// a removed lease's route goes, one no lease accounts for is pruned after
// the first batch, and a lease of another backend gets none.
func TestPeerRoutes(t *testing.T) {
	k := &fakeKernel{routes: map[netip.Prefix]netlink.Route{}}
	n := testNetwork(k)
	stale := netlink.Route{Dst: ipnet.FromPrefix(netip.MustParsePrefix("10.244.9.0/24")), Gw: net.ParseIP("198.51.100.9"), LinkIndex: 7, Protocol: unix.RTPROT_BOOT}
	k.routes[netip.MustParsePrefix("10.244.9.0/24")] = stale
	other := ipipLease("10.244.4.0/24", "198.51.100.14")
	other.Attrs.BackendType = "vxlan"
	n.HandleEvents(context.Background(), []lease.Event{
		{Type: lease.Added, Lease: ipipLease("10.244.2.0/24", "198.51.100.12")},
		{Type: lease.Added, Lease: ipipLease("10.244.3.0/24", "198.51.100.13")},
		{Type: lease.Added, Lease: other},
	})
	r := k.route(t, "10.244.2.0/24")
	if !r.Gw.Equal(net.ParseIP("198.51.100.12")) || r.LinkIndex != 7 || r.Flags&int(netlink.FLAG_ONLINK) == 0 {
		t.Errorf("route %+v, want via 198.51.100.12 dev flannel.ipip onlink", r)
	}
	if len(k.routes) != 2 {
		t.Errorf("routes %v: want the two ipip peers' only (stale pruned, the vxlan lease ignored)", k.routes)
	}
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Removed, Lease: ipipLease("10.244.3.0/24", "198.51.100.13")}})
	if _, ok := k.routes[netip.MustParsePrefix("10.244.3.0/24")]; ok {
		t.Error("a removed lease's route stayed")
	}
}

// flannel.ipip deleted and re-created with a new index: every peer's
// route is written through the new device by the next repair, and counted.
func TestRoutesFollowRecreatedDevice(t *testing.T) {
	k := &fakeKernel{routes: map[netip.Prefix]netlink.Route{}}
	n := testNetwork(k)
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Added, Lease: ipipLease("10.244.2.0/24", "198.51.100.12")}})
	delete(k.routes, netip.MustParsePrefix("10.244.2.0/24")) // went with the old device
	r := backend.Repairs{}
	n.peers.Locked(func() {
		n.adopt(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Index: 11, Name: DeviceName}})
		if err := n.set.Repair(r, true); err != nil {
			t.Fatal(err)
		}
	})
	if got := k.route(t, "10.244.2.0/24"); got.LinkIndex != 11 || r["route"] != 1 {
		t.Errorf("route %+v, repairs %v; want it through the new flannel.ipip (index 11), counted once", got, r)
	}
	if o := n.owned(); !o.Devices[11] || o.Devices[7] {
		t.Errorf("the healer watches devices %v, want the new index 11 only", o.Devices)
	}
}
