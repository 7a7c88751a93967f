package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// Self-healing: flanneld watches the kernel objects it owns and repairs
// drift as soon as netlink reports it. The periodic reconcile is set to an
// hour in these tests, so every repair measured here comes from a
// notification, within the times the README promises.

const healthPort = "10244"

// healthClient talks to a node's /readyz and /metrics inside its namespace.
func healthClient(n *testbed.Node) (*http.Client, string) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, n.NS, network, addr)
		},
	}}
	return c, "http://" + net.JoinHostPort(n.Addr.String(), healthPort)
}

// healArgs are flanneld's flags in these tests: metrics on the node's
// address, and no periodic reconcile to hide a missed notification.
func healArgs(n *testbed.Node) []string {
	return []string{"--healthz-ip=" + n.Addr.String(), "--healthz-port=" + healthPort, "--reconcile-interval=1h"}
}

// measure polls cond every 5 ms until it holds and returns how long that
// took since start (taken before the breakage, so the figure includes
// running the command that broke things: an upper bound); it fails the
// test after within.
func measure(t *testing.T, start time.Time, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	for {
		err := cond()
		if err == nil {
			took := time.Since(start)
			t.Logf("%s: %s", what, took.Round(time.Millisecond))
			return took
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// breakIt runs ip or bridge in the root namespace against ns (-n).
func breakIt(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// podsTalk is one quick echo between two pods (a lost packet costs 200 ms).
func podsTalk(from, to *testbed.Pod) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := testbed.PingWith(ctx, from.NS, to.IP, testbed.PingOptions{Wait: 200 * time.Millisecond})
		return err
	}
}

func programmed(n, peer *testbed.Node, subnet netip.Prefix) func() error {
	return func() error {
		st, err := vxlanState(n.NS, "flannel.1", subnet, peer.Addr)
		if err != nil {
			return err
		}
		if !st.all() {
			return fmt.Errorf("node %s for %s: %s", n.Name, subnet, st)
		}
		return nil
	}
}

func macOf(t *testing.T, ns, dev string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show %s in %s: %v: %s", dev, ns, err, out)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC in %s", out)
	return ""
}

// VXLAN: flannel.1 deleted, the external interface flapped. flanneld
// (never restarted) repairs each, pods talk again in time, and /metrics
// counts the repairs.
func TestSelfHealingVXLAN(t *testing.T) {
	c := newCluster(t, "healvx", clusterOpts{nodes: 3})
	envs := map[*testbed.Node]netip.Prefix{}
	for _, n := range c.Nodes {
		envs[n] = c.start([]*testbed.Node{n}, healArgs(n)...)[n].Subnet.Masked()
	}
	pods := c.addPods(c.Nodes)
	allPairsPing(t, pods)
	n1 := c.Nodes[0]
	pid := c.Flanneld(n1).Pid
	mac := macOf(t, n1.NS, "flannel.1")

	start := time.Now()
	breakIt(t, "ip", "-n", n1.NS, "link", "del", "flannel.1")
	measure(t, start, 2*time.Second, "ip link del flannel.1 -> pod-to-pod traffic back", podsTalk(pods[0], pods[1]))
	measure(t, start, 2*time.Second, "and back the other way", podsTalk(pods[1], pods[0]))
	if got := macOf(t, n1.NS, "flannel.1"); got != mac {
		t.Errorf("flannel.1 came back with MAC %s, want %s (peers' FDB entries point to it)", got, mac)
	}
	for _, m := range c.Nodes[1:] {
		if err := programmed(n1, m, envs[m])(); err != nil {
			t.Error(err)
		}
	}

	// A peer's route, neighbour and FDB entry deleted one by one:
	// TestSelfHealingPeerEntries, for every backend.

	start = time.Now()
	breakIt(t, "ip", "-n", n1.NS, "link", "set", "eth0", "down")
	breakIt(t, "ip", "-n", n1.NS, "link", "set", "eth0", "up")
	measure(t, start, 2*time.Second, "eth0 down/up -> pods talk again", func() error {
		for _, p := range pods[1:] {
			if err := podsTalk(pods[0], p)(); err != nil {
				return err
			}
			if err := podsTalk(p, pods[0])(); err != nil {
				return err
			}
		}
		for _, m := range c.Nodes[1:] {
			if err := programmed(n1, m, envs[m])(); err != nil {
				return err
			}
		}
		return nil
	})
	if p := c.Flanneld(n1); !p.Running() || p.Pid != pid {
		t.Fatalf("flanneld on %s was restarted (pid %d, want %d)", n1.Name, p.Pid, pid)
	}
	client, base := healthClient(n1)
	body, err := get(client, base+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"device", "address", "route", "neighbour", "fdb"} {
		if !strings.Contains(body, `flannel_reconcile_repairs_total{kind="`+kind+`"}`) {
			t.Errorf("/metrics counts no %s repair", kind)
		}
	}
	logRepairs(t, n1)
	allPairsPing(t, pods)
}

// logRepairs shows what flanneld logged about its repairs, with times.
func logRepairs(t *testing.T, n *testbed.Node) {
	b, err := os.ReadFile(n.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "repaired") || strings.Contains(l, "re-creating") {
			t.Logf("%s: %s", n.Name, l)
		}
	}
}

// host-gw: after the external interface goes down and up (the kernel flushes the routes
// through it) every route is back and pods talk within 2 s.
func TestSelfHealingHostGW(t *testing.T) {
	c := newCluster(t, "healhg", clusterOpts{nodes: 3, config: `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`})
	subnets := map[*testbed.Node]netip.Prefix{}
	for _, n := range c.Nodes {
		subnets[n] = c.start([]*testbed.Node{n}, healArgs(n)...)[n].Subnet.Masked()
	}
	pods := c.addPods(c.Nodes)
	allPairsPing(t, pods)
	n1 := c.Nodes[0]
	routed := func() error {
		for _, m := range c.Nodes[1:] {
			if via, err := routeVia(n1.NS, subnets[m]); err != nil || via.gw != m.Addr || via.dev != "eth0" {
				return fmt.Errorf("route to %s: %+v %v", subnets[m], via, err)
			}
		}
		return nil
	}
	// A peer's route deleted by hand: TestSelfHealingPeerEntries.
	start := time.Now()
	breakIt(t, "ip", "-n", n1.NS, "link", "set", "eth0", "down")
	if routed() == nil {
		t.Fatal("the kernel kept the routes through a down interface; the flap proves nothing")
	}
	breakIt(t, "ip", "-n", n1.NS, "link", "set", "eth0", "up")
	measure(t, start, 2*time.Second, "eth0 down/up -> routes back and pods talk", func() error {
		if err := routed(); err != nil {
			return err
		}
		for _, p := range pods[1:] {
			if err := podsTalk(pods[0], p)(); err != nil {
				return err
			}
		}
		return nil
	})
	allPairsPing(t, pods)
}

// etcd gone: the lease watch cannot follow peers, so /readyz says not
// ready and why; once etcd is back and the leases re-listed, ready again.
func TestDeafIsNotReady(t *testing.T) {
	c := newCluster(t, "deaf", clusterOpts{nodes: 1})
	n := c.Nodes[0]
	c.start(c.Nodes, healArgs(n)...)
	client, base := healthClient(n)
	measure(t, time.Now(), 10*time.Second, "ready at start", func() error { _, err := get(client, base+"/readyz"); return err })
	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	var reason string
	measure(t, time.Now(), 15*time.Second, "etcd stopped -> /readyz not ready", func() error {
		body, err := get(client, base+"/readyz")
		if err == nil {
			return fmt.Errorf("still ready: %s", body)
		}
		reason = body
		return nil
	})
	t.Logf("/readyz said: %s", strings.TrimSpace(reason))
	if !strings.Contains(reason, "cannot follow other nodes' leases") || !strings.Contains(reason, "etcd") {
		t.Errorf("/readyz reason %q does not say the lease watch is broken", reason)
	}
	if err := c.StartEtcd(testCtx(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	measure(t, time.Now(), 20*time.Second, "etcd back -> /readyz ready", func() error { _, err := get(client, base+"/readyz"); return err })
}

// Two leases share node 2's VtepMAC and PublicIP (a twin written under
// another subnet). Deleting the twin must leave node 2's FDB entry and
// neighbour on the other nodes in place: its pods stay reachable.
func TestTwinLeaseRemoval(t *testing.T) {
	c := newCluster(t, "twin", clusterOpts{nodes: 3})
	envs := c.start(c.Nodes)
	pods := c.addPods(c.Nodes)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	sub2 := envs[n2].Subnet.Masked()
	ctx := testCtx(t, time.Minute)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := func(p netip.Prefix) string {
		return testbed.DefaultEtcdPrefix + "/subnets/" + strings.Replace(p.String(), "/", "-", 1)
	}
	resp, err := cli.Get(ctx, key(sub2))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read %s: %v %v", key(sub2), resp, err)
	}
	twin := netip.MustParsePrefix("10.244.250.0/24")
	if _, err := cli.Put(ctx, key(twin), string(resp.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	measure(t, time.Now(), 5*time.Second, "twin lease programmed on node 1", programmed(n1, n2, twin))
	if _, err := cli.Delete(ctx, key(twin)); err != nil {
		t.Fatal(err)
	}
	measure(t, time.Now(), 5*time.Second, "twin lease unprogrammed on node 1", func() error {
		st, err := vxlanState(n1.NS, "flannel.1", twin, n2.Addr)
		if err != nil || st.route || st.neigh {
			return fmt.Errorf("twin still has %s %v", st, err)
		}
		return nil
	})
	for _, n := range []*testbed.Node{n1, c.Nodes[2]} {
		if err := programmed(n, n2, sub2)(); err != nil {
			t.Errorf("after the twin's removal: %v", err)
		}
	}
	for _, p := range []*testbed.Pod{pods[0], pods[2]} {
		if err := ping(ctx, p.NS, pods[1].IP, 56, false); err != nil {
			t.Errorf("pod %s -> pod %s on node 2 after the twin's removal: %v", p.Name, pods[1].Name, err)
		}
	}
}
