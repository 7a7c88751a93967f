package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelgo/flannel/internal/backend/wireguard"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

const wgConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`

// fallbackLine is what flanneld logs, once, when it runs WireGuard in
// userspace because the kernel lacks the module.
const fallbackLine = "using the userspace implementation (wireguard-go)"

// leaseOf reads n's lease from etcd.
func leaseOf(t *testing.T, c *cluster, env *subnetenv.Env) lease.Attrs {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := testbed.DefaultEtcdPrefix + "/subnets/" + lease.MakeKey(env.Subnet.Masked(), env.IPv6Subnet.Masked())
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v (%d keys)", key, err, len(resp.Kvs))
	}
	var a lease.Attrs
	if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil {
		t.Fatalf("lease %s: %v", key, err)
	}
	return a
}

// publicKey is the key in a lease's BackendData, which must be exactly
// upstream's {"PublicKey":"<base64>"}.
func publicKey(t *testing.T, a lease.Attrs) string {
	t.Helper()
	var d map[string]string
	if err := json.Unmarshal(a.BackendData, &d); err != nil || len(d) != 1 || d["PublicKey"] == "" {
		t.Fatalf("BackendData %s is not {\"PublicKey\":\"...\"}: %v", a.BackendData, err)
	}
	return d["PublicKey"]
}

// wgPeers lists the peers of a userspace device on n through its control
// socket.
func wgPeers(t *testing.T, n *testbed.Node, dev string) map[string]wgtypes.Peer {
	t.Helper()
	ps, err := wireguard.ReadPeers(filepath.Join(n.Dir, dev+".sock"))
	if err != nil {
		t.Fatalf("node %s: peers of %s: %v", n.Name, dev, err)
	}
	out := map[string]wgtypes.Peer{}
	for _, p := range ps {
		out[p.PublicKey.String()] = p
	}
	return out
}

// peerString is "[<allowed IPs>] <endpoint>".
func peerString(p wgtypes.Peer) string {
	var ips []string
	for _, n := range p.AllowedIPs {
		ips = append(ips, n.String())
	}
	return fmt.Sprintf("[%s] %v", strings.Join(ips, " "), p.Endpoint)
}

// Three WireGuard nodes on a 1500-byte underlay, in userspace on this
// kernel: all pod pairs ping, FLANNEL_MTU is 1420 and exact, the underlay
// carries only UDP 51820 with no pod payload in clear, each peer has its
// node's subnet as allowed IPs, and a node that leaves is removed as a
// peer.
func TestWireGuardThreeNodes(t *testing.T) {
	c := newCluster(t, "wg3", clusterOpts{nodes: 3, config: wgConfig})
	envs := c.start(c.Nodes)
	for n, env := range envs {
		if env.MTU != 1420 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 1420", n.Name, env.MTU)
		}
	}
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	keys := map[*testbed.Node]string{}
	for _, n := range c.Nodes {
		keys[n] = publicKey(t, leaseOf(t, c, envs[n]))
		st, err := os.Stat(testbed.WireGuardKeyFile(n))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("node %s: key file %v %v, want mode 0600", n.Name, st.Mode(), err)
		}
		log, _ := os.ReadFile(n.LogFile)
		if k := strings.Count(string(log), fallbackLine); k != 1 {
			t.Errorf("node %s logged the userspace fallback %d times, want once", n.Name, k)
		}
		if !strings.Contains(string(log), "flannel-wg: TUN offloads true") {
			t.Errorf("node %s: the userspace device runs without TUN offloads (no \"TUN offloads true\" in its log)", n.Name)
		}
	}
	requirePeers(t, n1, keys, envs, n2, n3)

	pods := c.addPods(c.Nodes)
	awaitHandshakes(t, pods)
	if pairs := allPairsPing(t, pods); pairs != 6 {
		t.Fatalf("checked %d pairs, want 6", pairs)
	}
	mtuBoundary(t, pods[0], pods[1], 1420)

	ctx := testCtx(t, time.Minute)
	capt := startCapture(t, n1, "udp")
	if err := pingSecret(ctx, pods[0], pods[1]); err != nil {
		t.Fatal(err)
	}
	out := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("IP %s.51820 > %s.51820: UDP", n1.Addr, n2.Addr)))
	back := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("IP %s.51820 > %s.51820: UDP", n2.Addr, n1.Addr)))
	raw, text := capt.result(t, func(text string) bool {
		return len(out.FindAllString(text, -1)) >= 3 && len(back.FindAllString(text, -1)) >= 3
	})
	if !out.MatchString(text) || !back.MatchString(text) {
		t.Errorf("underlay capture on %s lacks UDP 51820 both ways between %s and %s:\n%s", n1.Name, n1.Addr, n2.Addr, text)
	}
	if strings.Contains(string(raw), secret) {
		t.Errorf("the pod payload %q appears in clear in the underlay capture", secret)
	}

	deleteLease(t, c, n3, envs[n3])
	for _, n := range []*testbed.Node{n1, n2} {
		logHas(t, n, 5*time.Second, "removed peer "+envs[n3].Subnet.Masked().String())
		if _, still := wgPeers(t, n, "flannel-wg")[keys[n3]]; still {
			t.Errorf("node %s still has the departed %s as a WireGuard peer", n.Name, n3.Name)
		}
	}
	if err := ping(ctx, pods[0].NS, pods[1].IP, 56, false); err != nil {
		t.Errorf("after %s left, %s -> %s: %v", n3.Name, pods[0].Name, pods[1].Name, err)
	}
}

// A restarted node keeps its key file, so its lease carries the same
// public key, and traffic works again once it is back.
func TestWireGuardRestart(t *testing.T) {
	c := newCluster(t, "wgr", clusterOpts{nodes: 2, config: wgConfig})
	envs := c.start(c.Nodes)
	pods := c.addPods(c.Nodes)
	awaitHandshakes(t, pods)
	allPairsPing(t, pods)
	n2 := c.Nodes[1]
	key := publicKey(t, leaseOf(t, c, envs[n2]))
	if err := c.StopFlanneld(n2); err != nil {
		t.Fatal(err)
	}
	after := c.start([]*testbed.Node{n2})[n2]
	if after.Subnet != envs[n2].Subnet {
		t.Errorf("restart changed %s's subnet from %s to %s", n2.Name, envs[n2].Subnet, after.Subnet)
	}
	if again := publicKey(t, leaseOf(t, c, after)); again != key {
		t.Errorf("restart changed %s's public key from %s to %s; the key file should be reused", n2.Name, key, again)
	}
	st, err := os.Stat(testbed.WireGuardKeyFile(n2))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file after restart: %v %v, want mode 0600", st.Mode(), err)
	}
	eventually(t, 10*time.Second, "pods talk again after the restart", func() error {
		return allPairsPingErr(pods)
	})
}

// allPairsPingErr is allPairsPing returning the first failure instead of
// failing the test, for waiting.
func allPairsPingErr(pods []*testbed.Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, a := range pods {
		for _, b := range pods {
			if a.Node != b.Node {
				if err := testbed.Ping(ctx, a.NS, b.IP, 56, false); err != nil {
					return fmt.Errorf("%s -> %s: %w", a.Name, b.Name, err)
				}
			}
		}
	}
	return nil
}

// Two nodes whose PSKs differ (the config changed between their starts):
// no handshake completes, and both say why in their logs.
func TestWireGuardPSKMismatch(t *testing.T) {
	pskA, _ := wgtypes.GenerateKey()
	pskB, _ := wgtypes.GenerateKey()
	conf := func(psk wgtypes.Key) string {
		return fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":%q}}`, psk)
	}
	c := newCluster(t, "wgp", clusterOpts{nodes: 2, config: conf(pskA)})
	c.start(c.Nodes[:1])
	if err := c.PutConfig(testCtx(t, time.Minute), "", conf(pskB)); err != nil {
		t.Fatal(err)
	}
	c.start(c.Nodes[1:])
	pods := c.addPods(c.Nodes)
	ctx := testCtx(t, time.Minute)
	// flanneld greets every new peer, so handshakes are attempted (and
	// fail) without any pod traffic.
	for _, n := range c.Nodes {
		logHas(t, n, 40*time.Second, "Likely causes: the Backend PSK differs between the nodes")
	}
	if err := ping(ctx, pods[1].NS, pods[0].IP, 56, false); err == nil {
		t.Errorf("pods talk although the PSKs differ")
	}
}

// Dual stack in Mode separate (flannel-wg for IPv4 on 51820, flannel-wg-v6
// for IPv6 on 51821) and auto (one flannel-wg for both): both families
// reach the other node's pod.
func TestWireGuardDualStack(t *testing.T) {
	for _, mode := range []string{"separate", "auto"} {
		t.Run(mode, func(t *testing.T) {
			conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"wireguard","Mode":%q}}`, mode)
			c := newCluster(t, "wd"+mode[:2], clusterOpts{nodes: 2, ipv6: true, config: conf})
			envs := c.start(c.Nodes)
			pods := c.addPods(c.Nodes)
			awaitHandshakes(t, pods)
			ctx := testCtx(t, time.Minute)
			for _, pair := range [][2]*testbed.Pod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
				if err := ping(ctx, pair[0].NS, pair[1].IP, 56, false); err != nil {
					t.Errorf("ping %s -> %s: %v", pair[0].Name, pair[1].IP, err)
				}
				if err := ping(ctx, pair[0].NS, pair[1].IP6, 56, false); err != nil {
					t.Errorf("ping6 %s -> %s: %v", pair[0].Name, pair[1].IP6, err)
				}
			}
			n1, n2 := c.Nodes[0], c.Nodes[1]
			want := map[string]string{
				"flannel-wg": fmt.Sprintf("[%s %s] %s:51820", envs[n2].Subnet.Masked(), envs[n2].IPv6Subnet.Masked(), n2.Addr),
			}
			if mode == "separate" {
				want = map[string]string{
					"flannel-wg":    fmt.Sprintf("[%s] %s:51820", envs[n2].Subnet.Masked(), n2.Addr),
					"flannel-wg-v6": fmt.Sprintf("[%s] [%s]:51821", envs[n2].IPv6Subnet.Masked(), n2.Addr6),
				}
			}
			for dev, w := range want {
				var got []string
				for _, p := range wgPeers(t, n1, dev) {
					got = append(got, peerString(p))
				}
				if len(got) != 1 || got[0] != w {
					t.Errorf("node %s: peers of %s are %q, want [%q]", n1.Name, dev, got, w)
				}
			}
			if _, err := os.Stat(filepath.Join(n1.Dir, "flannel-wg-v6.sock")); (mode == "separate") != (err == nil) {
				t.Errorf("Mode %s: flannel-wg-v6 present is %v", mode, err == nil)
			}
		})
	}
}

// kernelHasWireGuard tries to create a WireGuard link in a namespace of
// the testbed.
func kernelHasWireGuard(t *testing.T, n *testbed.Node) (bool, string) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	out, err := testbed.Exec(ctx, n.NS, "ip", "link", "add", "wgprobe", "type", "wireguard")
	if err != nil {
		return false, strings.TrimSpace(string(out))
	}
	if _, err := testbed.Exec(ctx, n.NS, "ip", "link", "del", "wgprobe"); err != nil {
		t.Fatal(err)
	}
	return true, ""
}

// "Implementation":"kernel" uses the kernel module: two nodes talk over
// flannel-wg links of type wireguard. Where the kernel lacks the module,
// flanneld must refuse to start with a message that says so and names
// the way out, and the data-path part is skipped.
func TestWireGuardKernel(t *testing.T) {
	conf := `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Implementation":"kernel"}}`
	c := newCluster(t, "wgk", clusterOpts{nodes: 2, config: conf})
	if ok, why := kernelHasWireGuard(t, c.Nodes[0]); !ok {
		c.requireKernelLacks(t, "wireguard", why, "kernel lacks wireguard", `"Implementation":"userspace"`)
	}
	c.start(c.Nodes)
	for _, n := range c.Nodes {
		out, err := testbed.Exec(testCtx(t, time.Minute), n.NS, "ip", "-d", "link", "show", "flannel-wg")
		if err != nil || !strings.Contains(string(out), "wireguard") {
			t.Errorf("node %s: flannel-wg is not a kernel WireGuard link: %v\n%s", n.Name, err, out)
		}
	}
	pods := c.addPods(c.Nodes)
	awaitHandshakes(t, pods)
	if pairs := allPairsPing(t, pods); pairs != 2 {
		t.Fatalf("checked %d pairs, want 2", pairs)
	}
}

// awaitHandshakes lets the first handshake of every pair of nodes finish
// (up to 10 s a pair) before a test checks the ping matrix strictly. Nodes
// that start together each greet the other before it knows them, and
// WireGuard retries a dropped initiation only after 5 s (REKEY_TIMEOUT),
// longer than ping's one-second wait.
func awaitHandshakes(t *testing.T, pods []*testbed.Pod) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	for _, a := range pods {
		for _, b := range pods {
			if a.Node == b.Node {
				continue
			}
			_ = testbed.PingWithin(ctx, a.NS, b.IP, 56, false, 10*time.Second)
			if b.IP6.IsValid() { // Mode separate: a device and a handshake of its own
				_ = testbed.PingWithin(ctx, a.NS, b.IP6, 56, false, 10*time.Second)
			}
		}
	}
}

// requirePeers checks that n's flannel-wg has each of others as a peer
// with its key, its subnet as allowed IPs and its address on 51820.
func requirePeers(t *testing.T, n *testbed.Node, keys map[*testbed.Node]string, envs map[*testbed.Node]*subnetenv.Env, others ...*testbed.Node) {
	t.Helper()
	peers := wgPeers(t, n, "flannel-wg")
	for _, m := range others {
		p, ok := peers[keys[m]]
		want := fmt.Sprintf("[%s] %s:51820", envs[m].Subnet.Masked(), m.Addr)
		if got := peerString(p); !ok || got != want {
			t.Errorf("node %s: peer for %s is %q (present %v), want %q", n.Name, m.Name, got, ok, want)
		}
	}
}
