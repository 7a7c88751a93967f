package backend_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// TestEachNeighReadsTheNamespaceOfTheHandle lists neighbour and FDB
// entries of a VXLAN device in a scratch namespace: every entry of that
// device and family, none of another device, and none from the test's own
// namespace.
func TestEachNeighReadsTheNamespaceOfTheHandle(t *testing.T) {
	tbtest.NeedRoot(t, "ip", "bridge")
	ns := tbtest.NS(t, "tbk-neigh")
	tbtest.Run(t, "ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	tbtest.Run(t, "ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "7", "dstport", "8472", "nolearning")
	for _, l := range []string{"v0", "v1", "vx0"} {
		tbtest.Run(t, "ip", "-n", ns, "link", "set", l, "up")
	}
	var want []string
	for i := 1; i <= 300; i++ {
		ip, mac := fmt.Sprintf("10.244.%d.%d", i/200, i%200), fmt.Sprintf("0e:5c:00:00:%02x:%02x", i/256, i%256)
		tbtest.Run(t, "ip", "-n", ns, "neigh", "add", ip, "lladdr", mac, "dev", "vx0", "nud", "permanent")
		want = append(want, ip)
	}
	tbtest.Run(t, "ip", "-n", ns, "neigh", "add", "10.99.0.1", "lladdr", "0e:5c:00:00:ff:ff", "dev", "v0", "nud", "permanent")
	tbtest.Run(t, "bridge", "-n", ns, "fdb", "append", "0e:5c:00:00:00:01", "dev", "vx0", "dst", "198.51.100.7", "self", "permanent")

	h := tbtest.Handle(t, ns)
	vx, err := h.LinkByName("vx0")
	if err != nil {
		t.Fatal(err)
	}
	nsh := tbtest.NSHandle(t, ns)
	var got []string
	if err := backend.EachNeigh(&nsh, vx.Attrs().Index, unix.AF_INET, func() { got = got[:0] }, func(ne netlink.Neigh) { got = append(got, ne.IP.String()) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("EachNeigh listed %d entries %v..., want the %d on vx0", len(got), got[:min(len(got), 3)], len(want))
	}
	var fdb []string
	if err := backend.EachNeigh(&nsh, vx.Attrs().Index, unix.AF_BRIDGE, func() { fdb = fdb[:0] }, func(ne netlink.Neigh) {
		fdb = append(fdb, ne.HardwareAddr.String()+" "+ne.IP.String())
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fdb, "0e:5c:00:00:00:01 198.51.100.7") {
		t.Errorf("FDB of vx0: %v, want 0e:5c:00:00:00:01 198.51.100.7 among them", fdb)
	}
	// The same index in the test's own namespace is another device, or none.
	var here int
	if err := backend.EachNeigh(nil, vx.Attrs().Index, unix.AF_INET, func() { here = 0 }, func(netlink.Neigh) { here++ }); err != nil {
		t.Fatal(err)
	}
	if here == len(want) {
		t.Errorf("EachNeigh(nil) read the scratch namespace, not the caller's")
	}
}
