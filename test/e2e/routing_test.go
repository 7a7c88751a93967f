package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
	"github.com/vishvananda/netlink"
)

// host-gw on one segment: plain routes via each peer's address, no
// flannel.* device, and pods get the full 1500 bytes.
func TestHostGWOneSegment(t *testing.T) {
	c := newCluster(t, "hg1", clusterOpts{nodes: 3, config: `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`})
	envs := c.start(c.Nodes)
	for n, env := range envs {
		if env.MTU != 1500 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 1500", n.Name, env.MTU)
		}
	}
	pods := c.addPods(c.Nodes)
	if pairs := allPairsPing(t, pods); pairs != 6 {
		t.Fatalf("checked %d pairs, want 6", pairs)
	}
	for _, n := range c.Nodes {
		for _, m := range c.Nodes {
			if n == m {
				continue
			}
			if via, err := routeVia(n.NS, envs[m].Subnet.Masked()); err != nil || via.gw != m.Addr || via.dev != "eth0" {
				t.Errorf("node %s route to %s: %+v %v, want via %s dev eth0", n.Name, envs[m].Subnet.Masked(), via, err, m.Addr)
			}
		}
		if devs := flannelDevices(t, n.NS); len(devs) > 0 {
			t.Errorf("node %s has %v; host-gw needs no flannel device", n.Name, devs)
		}
	}
	ctx := testCtx(t, time.Minute)
	if err := ping(ctx, pods[0].NS, pods[1].IP, 1472, true); err != nil {
		t.Errorf("1472-byte DF ping over host-gw (pod MTU 1500) should pass: %v", err)
	}
}

// Four nodes on two segments joined by a router: host-gw serves the peer
// on its own segment and names the ones behind the router in its log;
// VXLAN with DirectRouting reaches everybody, directly on-segment and
// through flannel.1 across.
func TestTwoSegments(t *testing.T) {
	t.Run("host-gw", func(t *testing.T) {
		c := newCluster(t, "s2hg", clusterOpts{nodes: 4, segments: 2, config: `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`})
		envs := c.start(c.Nodes)
		pods := c.addPods(c.Nodes)
		ctx := testCtx(t, time.Minute)
		n1, n3 := c.Nodes[0], c.Nodes[2]
		if err := ping(ctx, pods[0].NS, pods[2].IP, 56, false); err != nil {
			t.Errorf("same-segment pods %s -> %s: %v", pods[0].Name, pods[2].Name, err)
		}
		if via, err := routeVia(n1.NS, envs[n3].Subnet.Masked()); err != nil || via.gw != n3.Addr {
			t.Errorf("n1 route to n3's subnet: %+v %v", via, err)
		}
		for _, far := range []*testbed.Node{c.Nodes[1], c.Nodes[3]} {
			sub := envs[far].Subnet.Masked()
			eventually(t, 10*time.Second, "n1 names cross-segment peer "+far.Name, func() error {
				log, _ := os.ReadFile(n1.LogFile)
				for _, line := range strings.Split(string(log), "\n") {
					if strings.Contains(line, sub.String()) && strings.Contains(line, far.Addr.String()) && strings.Contains(strings.ToLower(line), "vxlan") {
						return nil
					}
				}
				return fmt.Errorf("no log line names %s at %s and advises VXLAN", sub, far.Addr)
			})
			if via, err := routeVia(n1.NS, sub); err == nil {
				t.Errorf("n1 has a route to cross-segment %s (%+v); host-gw cannot reach it", sub, via)
			}
		}
	})
	t.Run("vxlan-directrouting", func(t *testing.T) {
		c := newCluster(t, "s2dr", clusterOpts{nodes: 4, segments: 2,
			config: `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`})
		envs := c.start(c.Nodes)
		pods := c.addPods(c.Nodes)
		if pairs := allPairsPing(t, pods); pairs != 12 {
			t.Fatalf("checked %d pairs, want 12", pairs)
		}
		n1 := c.Nodes[0]
		for _, m := range c.Nodes[1:] {
			sub := envs[m].Subnet.Masked()
			via, err := routeVia(n1.NS, sub)
			if err != nil {
				t.Fatal(err)
			}
			want := route{gw: m.Addr, dev: "eth0"}
			if m.Segment != n1.Segment {
				want = route{gw: sub.Addr(), dev: "flannel.1"}
			}
			if via != want {
				t.Errorf("n1 route to %s (%s, segment %d): %+v, want %+v", sub, m.Name, m.Segment, via, want)
			}
		}
	})
}

// Dual stack over VXLAN and host-gw: pods reach each other over IPv4 and
// IPv6; subnet.env carries both families.
func TestDualStack(t *testing.T) {
	for _, typ := range []string{"vxlan", "host-gw"} {
		t.Run(typ, func(t *testing.T) {
			conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":%q}}`, typ)
			c := newCluster(t, "ds"+strings.ReplaceAll(typ, "-", "")[:2], clusterOpts{nodes: 2, ipv6: true, config: conf})
			envs := c.start(c.Nodes, "--ip-masq")
			for n, env := range envs {
				if b, err := testbed.Exec(testCtx(t, time.Minute), n.NS, "ip6tables", "-t", "nat", "-S", "FLANNEL-POSTRTG"); err != nil || !strings.Contains(string(b), "MASQUERADE") {
					t.Errorf("node %s: no IPv6 masquerade rule (%v):\n%s", n.Name, err, b)
				}
				if !env.IPv6Subnet.IsValid() || env.IPv6Network.String() != "fd00:10:244::/56" {
					t.Errorf("node %s subnet.env lacks IPv6: %+v", n.Name, env)
				}
			}
			pods := c.addPods(c.Nodes)
			ctx := testCtx(t, time.Minute)
			for _, pair := range [][2]*testbed.Pod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
				if err := ping(ctx, pair[0].NS, pair[1].IP, 56, false); err != nil {
					t.Errorf("ping %s -> %s: %v", pair[0].Name, pair[1].IP, err)
				}
				if err := ping(ctx, pair[0].NS, pair[1].IP6, 56, false); err != nil {
					t.Errorf("ping6 %s -> %s: %v", pair[0].Name, pair[1].IP6, err)
				}
			}
		})
	}
}

// IPv6-only VXLAN over an IPv6 underlay: flannel-v6.1 with MTU − 70.
func TestIPv6OnlyVXLAN(t *testing.T) {
	conf := `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
	c := newCluster(t, "v6o", clusterOpts{nodes: 2, ipv6: true, config: conf})
	envs := c.start(c.Nodes)
	for n, env := range envs {
		if env.Subnet.IsValid() || !env.IPv6Subnet.IsValid() || env.MTU != 1430 {
			t.Errorf("node %s: subnet.env %+v, want IPv6 only with MTU 1430", n.Name, env)
		}
	}
	pods := c.addPods(c.Nodes)
	ctx := testCtx(t, time.Minute)
	if err := ping(ctx, pods[0].NS, pods[1].IP6, 56, false); err != nil {
		t.Errorf("ping6 %s -> %s: %v", pods[0].Name, pods[1].IP6, err)
	}
	// 1430 − 40 (IPv6) − 8 (ICMPv6) = 1382 bytes of payload fit.
	if err := ping(ctx, pods[0].NS, pods[1].IP6, 1382, true); err != nil {
		t.Errorf("1382-byte ping6 should pass: %v", err)
	}
	for _, n := range c.Nodes {
		if devs := flannelDevices(t, n.NS); len(devs) != 1 || devs[0] != "flannel-v6.1" {
			t.Errorf("node %s has flannel devices %v, want only flannel-v6.1", n.Name, devs)
		}
	}
}

type route struct {
	gw  netip.Addr
	dev string
}

// routeVia returns the gateway and device of the route to dst in ns.
func routeVia(ns string, dst netip.Prefix) (route, error) {
	var r route
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		rt, err := k.HostGWRoute(dst)
		if err != nil {
			return err
		}
		if rt == nil {
			return fmt.Errorf("no route to %s in %s", dst, ns)
		}
		r = route{gw: rt.Gw, dev: rt.Dev}
		return nil
	})
	return r, err
}

// flannelDevices lists links named flannel* in ns.
func flannelDevices(t *testing.T, ns string) []string {
	t.Helper()
	var names []string
	err := testbed.WithHandle(ns, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "flannel") {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// The Backend MTU key is the underlay MTU, as upstream reads it:
// {"MTU":1400} gives FLANNEL_MTU=1350 and a path that carries exactly
// that (a 1322-byte DF payload passes, 1323 does not). --ip-blackhole-route
// drops traffic to unused addresses of the node's own subnet instead of
// sending it back out, and the route is put back within a resync when
// deleted. flanneld tells systemd READY=1 once the network is up and
// STOPPING=1 on SIGTERM, through $NOTIFY_SOCKET.
func TestBlackholeRouteAndMTUOverride(t *testing.T) {
	c := newCluster(t, "bhm", clusterOpts{nodes: 2,
		config: `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}`})
	n := c.Nodes[0]
	notify := listenNotify(t)
	ctx := testCtx(t, 2*time.Minute)
	started := time.Now()
	if err := c.StartFlanneldEnv(ctx, n, []string{"NOTIFY_SOCKET=" + notify.path}, "--ip-blackhole-route", "--iptables-resync=1"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartFlanneld(ctx, c.Nodes[1]); err != nil {
		t.Fatal(err)
	}
	envs := c.waitReady(c.Nodes, started, time.Minute)
	if got := notify.next(t, 10*time.Second); got != "READY=1" {
		t.Errorf("systemd notification %q, want READY=1", got)
	}
	for node, env := range envs {
		if env.MTU != 1350 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 1350 (Backend MTU 1400 is the underlay's, less 50)", node.Name, env.MTU)
		}
	}
	pods := c.addPods(c.Nodes)
	if err := ping(ctx, pods[0].NS, pods[1].IP, 1322, true); err != nil {
		t.Errorf("1322-byte DF ping should pass on a 1350 overlay: %v", err)
	}
	if err := ping(ctx, pods[0].NS, pods[1].IP, 1323, true); err == nil {
		t.Errorf("1323-byte DF ping passed; the overlay MTU is 1350")
	}

	subnet := envs[n].Subnet.Masked().String()
	blackhole := func() error {
		b, err := testbed.Exec(ctx, n.NS, "ip", "route", "show", "type", "blackhole")
		if err != nil || !strings.Contains(string(b), subnet) {
			return fmt.Errorf("no blackhole route for %s (%v):\n%s", subnet, err, b)
		}
		return nil
	}
	if err := blackhole(); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Exec(ctx, n.NS, "ip", "route", "del", "blackhole", subnet, "metric", "32000"); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 3*time.Second, "blackhole route restored", blackhole)
	t.Logf("blackhole route for %s back %s after deletion (resync 1s)", subnet, took.Round(10*time.Millisecond))

	if err := c.StopFlanneld(n); err != nil {
		t.Fatal(err)
	}
	if got := notify.next(t, 10*time.Second); got != "STOPPING=1" {
		t.Errorf("systemd notification on SIGTERM %q, want STOPPING=1", got)
	}
}

// notifySocket is a stand-in for systemd's $NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// next returns the next notification, or what went wrong after within.
func (s *notifySocket) next(t *testing.T, within time.Duration) string {
	t.Helper()
	if err := s.conn.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := s.conn.Read(buf)
	if err != nil {
		return fmt.Sprintf("(none within %s: %v)", within, err)
	}
	return strings.TrimSpace(string(buf[:n]))
}
