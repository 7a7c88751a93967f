package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

const udpConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`

// Three udp nodes on a 1500-byte underlay: every cross-node pod pair
// pings; FLANNEL_MTU is 1472 and exactly that much passes; on the underlay
// the pod's packet travels whole inside UDP port 8285; a node that leaves
// is forgotten and traffic for it is dropped and counted, not sent.
func TestUDPThreeNodes(t *testing.T) {
	c := newCluster(t, "udp3", clusterOpts{nodes: 3, config: udpConfig})
	envs := c.start(c.Nodes, metricsArgs...)
	for n, env := range envs {
		if env.MTU != 1472 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 1472", n.Name, env.MTU)
		}
	}
	pods := c.addPods(c.Nodes)
	if pairs := allPairsPing(t, pods); pairs != 6 {
		t.Fatalf("checked %d pairs, want 6", pairs)
	}
	mtuBoundary(t, pods[0], pods[1], 1472)

	ctx := testCtx(t, time.Minute)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	capt := startCapture(t, n1, "udp")
	if err := pingSecret(ctx, pods[0], pods[1]); err != nil {
		t.Fatal(err)
	}
	out := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("IP %s.8285 > %s.8285: UDP", n1.Addr, n2.Addr)))
	back := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("IP %s.8285 > %s.8285: UDP", n2.Addr, n1.Addr)))
	raw, text := capt.result(t, func(text string) bool {
		return len(out.FindAllString(text, -1)) >= 3 && len(back.FindAllString(text, -1)) >= 3
	})
	if !out.MatchString(text) || !back.MatchString(text) {
		t.Errorf("underlay capture on %s lacks UDP 8285 both ways between %s and %s:\n%s", n1.Name, n1.Addr, n2.Addr, text)
	}
	if !strings.Contains(string(raw), secret) {
		t.Errorf("underlay capture lacks the pod payload %q: udp carries it unencrypted, so the capture is broken", secret)
	}

	requireSegmented(t, n1, n2, pods[0], pods[1])

	before, err := metric(ctx, n1, "flannel_udp_no_peer_drops_total")
	if err != nil {
		t.Fatal(err)
	}
	deleteLease(t, c, n3, envs[n3])
	for _, n := range []*testbed.Node{n1, n2} {
		logHas(t, n, 5*time.Second, "udp: removed peer "+envs[n3].Subnet.Masked().String())
	}
	// Exactly three echoes, each of which must be dropped and counted.
	if out, err := testbed.PingWith(ctx, pods[0].NS, pods[2].IP, testbed.PingOptions{Count: 3, Interval: 200 * time.Millisecond}); err == nil {
		t.Errorf("pod %s still reaches %s on the node that left: %s", pods[0].Name, pods[2].IP, out)
	}
	after, err := metric(ctx, n1, "flannel_udp_no_peer_drops_total")
	if err != nil {
		t.Fatal(err)
	}
	if after < before+3 {
		t.Errorf("flannel_udp_no_peer_drops_total on %s went from %v to %v; want at least 3 more (the pings to the departed node)", n1.Name, before, after)
	}
	if err := ping(ctx, pods[0].NS, pods[1].IP, 56, false); err != nil {
		t.Errorf("after %s left, %s -> %s: %v", n3.Name, pods[0].Name, pods[1].Name, err)
	}
}

// requireSegmented checks that TCP, which hands flannel0 segments of up to
// 64 KiB, leaves node from as packets of at most 1472 bytes, one per
// datagram, as an upstream peer expects.
func requireSegmented(t *testing.T, from, to *testbed.Node, a, b *testbed.Pod) {
	t.Helper()
	capt := startCapture(t, from, "udp dst port 8285 and dst host "+to.Addr.String())
	tcpBurst(t, a, b)
	raw, _ := capt.result(t, func(string) bool { return true })
	sizes := map[int]int{}
	for _, d := range udpPayloads(t, raw) {
		pkts, err := ipPackets(d, 1472)
		if err != nil {
			t.Fatalf("a %d-byte datagram to %s: %v", len(d), to.Name, err)
		}
		for _, p := range pkts {
			sizes[len(p)]++
		}
	}
	// The capture may miss some under load; a good share will do.
	if sizes[1472] < 1000 {
		t.Errorf("4 MiB of TCP left as %d packets of 1472 bytes (all sizes: %v); want most of about 2900", sizes[1472], sizes)
	}
}

// The classic minimal config names no backend: flanneld uses udp, as
// upstream does (so a mixed cluster agrees on the data plane), and says
// once that vxlan is what the operator most likely wants.
func TestMinimalConfigMeansUDP(t *testing.T) {
	c := newCluster(t, "min", clusterOpts{nodes: 2, config: `{"Network":"10.244.0.0/16"}`})
	envs := c.start(c.Nodes)
	for n, env := range envs {
		if env.MTU != 1472 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want udp's 1472", n.Name, env.MTU)
		}
		nsRun(t, n.NS, "ip", "link", "show", "flannel0")
		logHas(t, n, 5*time.Second, "names no backend (no Backend object): using udp, as upstream flannel does")
	}
	if pairs := allPairsPing(t, c.addPods(c.Nodes)); pairs != 2 {
		t.Fatalf("checked %d pairs, want 2", pairs)
	}
}
