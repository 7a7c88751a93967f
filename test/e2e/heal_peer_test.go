package e2e

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// breakage is one kernel entry of a peer's deleted by hand, and how to
// tell it is back.
type breakage struct {
	what     string
	del      func(t *testing.T)
	restored func() error
	within   time.Duration
}

// healCase is a backend and what it programs for node 2 on node 1.
type healCase struct {
	name, config string
	breakages    func(t *testing.T, c *cluster, n1, n2 *testbed.Node, sub2 netip.Prefix) []breakage
}

// Per-peer healing under every backend that programs routes: on node 1,
// what node 2 needs in the kernel is deleted by hand, one entry at a time,
// and is back within 1 s, and the pods talk again. The periodic reconcile
// is an hour away: every repair comes from a notification (for a peer
// removed from the userspace WireGuard device, the control socket's own
// report of a change). (ipip and kernel
// WireGuard are not in this kernel; their engine is unit-tested through
// its writer.)
func TestSelfHealingPeerEntries(t *testing.T) {
	for _, tc := range []healCase{
		{"vxlan", defaultConfig, vxlanBreakages},
		{"host-gw", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, hostGWBreakages},
		{"udp", udpConfig, tunnelBreakages("flannel0")},
		{"wireguard", wgConfig, wireguardBreakages},
	} {
		t.Run(tc.name, func(t *testing.T) { healPeerEntries(t, tc) })
	}
}

func healPeerEntries(t *testing.T, tc healCase) {
	c := newCluster(t, "hp"+strings.ReplaceAll(tc.name, "-", "")[:3], clusterOpts{nodes: 2, config: tc.config})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	subnets := map[*testbed.Node]netip.Prefix{}
	for _, n := range c.Nodes {
		subnets[n] = c.start([]*testbed.Node{n}, healArgs(n)...)[n].Subnet.Masked()
	}
	pods := c.addPods(c.Nodes)
	if tc.name == "wireguard" {
		awaitHandshakes(t, pods)
	}
	allPairsPing(t, pods)
	pid := c.Flanneld(n1).Pid
	for _, b := range tc.breakages(t, c, n1, n2, subnets[n2]) {
		if err := b.restored(); err != nil {
			t.Fatalf("%s: not in place before the test: %v", b.what, err)
		}
		start := time.Now()
		b.del(t)
		measure(t, start, b.within, b.what+" deleted by hand -> restored", b.restored)
		measure(t, start, b.within+2*time.Second, "and pods talk", podsTalk(pods[0], pods[1]))
	}
	if p := c.Flanneld(n1); !p.Running() || p.Pid != pid {
		t.Fatalf("flanneld on %s was restarted (pid %d, want %d)", n1.Name, p.Pid, pid)
	}
	logRepairs(t, n1)
	allPairsPing(t, pods)
}

func run(argv ...string) func(t *testing.T) {
	return func(t *testing.T) { t.Helper(); breakIt(t, argv...) }
}

func vxlanBreakages(t *testing.T, c *cluster, n1, n2 *testbed.Node, sub2 netip.Prefix) []breakage {
	ok := programmed(n1, n2, sub2)
	return []breakage{
		{"route " + sub2.String(), run("ip", "-n", n1.NS, "route", "del", sub2.String()), ok, time.Second},
		{"neighbour " + sub2.Addr().String(), run("ip", "-n", n1.NS, "neigh", "del", sub2.Addr().String(), "dev", "flannel.1"), ok, time.Second},
		{"fdb entry", run("bridge", "-n", n1.NS, "fdb", "del", macOf(t, n2.NS, "flannel.1"), "dev", "flannel.1", "dst", n2.Addr.String(), "self"), ok, time.Second},
	}
}

func hostGWBreakages(t *testing.T, c *cluster, n1, n2 *testbed.Node, sub2 netip.Prefix) []breakage {
	ok := func() error {
		if via, err := routeVia(n1.NS, sub2); err != nil || via.gw != n2.Addr || via.dev != "eth0" {
			return fmt.Errorf("route to %s: %+v %v", sub2, via, err)
		}
		return nil
	}
	return []breakage{{"route " + sub2.String(), run("ip", "-n", n1.NS, "route", "del", sub2.String()), ok, time.Second}}
}

// tunnelBreakages: udp and WireGuard route the whole network through
// their device; that route is what a peer needs in the kernel. The
// device itself, a TUN interface that flanneld holds open, is made again
// when deleted.
func tunnelBreakages(dev string) func(*testing.T, *cluster, *testbed.Node, *testbed.Node, netip.Prefix) []breakage {
	return func(t *testing.T, c *cluster, n1, n2 *testbed.Node, sub2 netip.Prefix) []breakage {
		network := netip.MustParsePrefix("10.244.0.0/16")
		routed := devRoute(n1.NS, network, dev)
		return []breakage{
			{"route " + network.String() + " dev " + dev, run("ip", "-n", n1.NS, "route", "del", network.String(), "dev", dev), routed, time.Second},
			{"device " + dev, run("ip", "-n", n1.NS, "link", "del", dev), routed, time.Second},
		}
	}
}

func wireguardBreakages(t *testing.T, c *cluster, n1, n2 *testbed.Node, sub2 netip.Prefix) []breakage {
	var key string
	for k, p := range wgPeers(t, n1, "flannel-wg") {
		if len(p.AllowedIPs) == 1 && p.AllowedIPs[0].String() == sub2.String() {
			key = k
		}
	}
	if key == "" {
		t.Fatalf("node %s has no WireGuard peer for %s", n1.Name, sub2)
	}
	hasPeer := func() error {
		if _, ok := wgPeers(t, n1, "flannel-wg")[key]; !ok {
			return fmt.Errorf("no WireGuard peer %s on %s", key, n1.Name)
		}
		return nil
	}
	// After the device is re-created, its peer must be back too.
	routedWithPeer := func() error {
		if err := devRoute(n1.NS, netip.MustParsePrefix("10.244.0.0/16"), "flannel-wg")(); err != nil {
			return err
		}
		return hasPeer()
	}
	bs := tunnelBreakages("flannel-wg")(t, c, n1, n2, sub2)
	bs[len(bs)-1].restored = routedWithPeer
	return append(bs, breakage{"WireGuard peer " + sub2.String(), func(t *testing.T) { wgRemovePeer(t, n1, "flannel-wg", key) }, hasPeer, time.Second})
}

// devRoute checks that network is routed through dev in ns.
func devRoute(ns string, network netip.Prefix, dev string) func() error {
	return func() error {
		return testbed.WithHandle(ns, func(h *netlink.Handle) error {
			l, err := h.LinkByName(dev)
			if err != nil {
				return err
			}
			_, ipn, _ := net.ParseCIDR(network.String())
			rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipn}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
			if err != nil {
				return err
			}
			if len(rs) == 0 {
				return fmt.Errorf("no route %s dev %s in %s", network, dev, ns)
			}
			return nil
		})
	}
}

// wgRemovePeer removes a peer from a userspace device through its control
// socket, as `wg set <dev> peer <key> remove` does.
func wgRemovePeer(t *testing.T, n *testbed.Node, dev, key string) {
	t.Helper()
	c, err := net.DialTimeout("unix", filepath.Join(n.Dir, dev+".sock"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	k, err := wgtypes.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "set=1\npublic_key=%s\nremove=true\n\n", hex.EncodeToString(k[:])); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	m, _ := c.Read(buf)
	if !strings.HasPrefix(string(buf[:m]), "errno=0") {
		t.Fatalf("remove peer %s from %s on %s: %q", key, dev, n.Name, buf[:m])
	}
}
