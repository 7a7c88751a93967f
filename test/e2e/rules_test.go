package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// iptables and nftables modes give the same masquerade behaviour, and
// both put back a rule deleted by hand within --iptables-resync.
func TestMasqueradeModes(t *testing.T) {
	modes := []struct {
		name, tb string
		nft      bool
		// breakRule deletes flannel's masquerade rules in a node by hand.
		breakRule []string
		// present lists them, to see when they are back.
		present []string
		want    string
	}{
		{name: "iptables", tb: "mipt",
			breakRule: []string{"iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"},
			present:   []string{"iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG"},
			want:      "MASQUERADE"},
		{name: "nftables", tb: "mnft", nft: true,
			breakRule: []string{"nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"},
			present:   []string{"nft", "list", "chain", "ip", "flannel-ipv4", "postrtg"},
			want:      "masquerade"},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","EnableNFTables":%v,"Backend":{"Type":"vxlan"}}`, m.nft)
			c := newCluster(t, m.tb, clusterOpts{nodes: 2, config: conf})
			const resync = 2 * time.Second
			c.start(c.Nodes, "--ip-masq", "--iptables-resync=2")
			pods := c.addPods(c.Nodes)
			ctx := testCtx(t, 2*time.Minute)
			out, err := c.AddOutside(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkMasq(t, ctx, pods, out.NS, out.Addr)

			n1 := c.Nodes[0]
			if _, err := testbed.Exec(ctx, n1.NS, m.breakRule...); err != nil {
				t.Fatal(err)
			}
			took := eventually(t, resync+2*time.Second, m.name+" masquerade rules restored", func() error {
				b, err := testbed.Exec(ctx, n1.NS, m.present...)
				if err != nil {
					return err
				}
				if !strings.Contains(string(b), m.want) {
					return fmt.Errorf("no %s rule yet:\n%s", m.want, b)
				}
				return nil
			})
			t.Logf("%s: masquerade rules back %s after deletion (resync %s)", m.name, took.Round(10*time.Millisecond), resync)
			checkMasq(t, ctx, pods, out.NS, out.Addr)
			if !m.nft {
				return
			}
			checkRestartAndSwitch(t, c, pods, out)
		})
	}
}

// checkRestartAndSwitch takes a node running in nftables mode through a
// stop and a switch to iptables mode. Stopped, flanneld leaves its table
// in place, as it leaves routes: pods keep egress NAT during a restart.
// Started in iptables mode, it removes the nftables table it no longer
// uses and masquerades with iptables.
func checkRestartAndSwitch(t *testing.T, c *cluster, pods []*testbed.Pod, out *testbed.Host) {
	ctx := testCtx(t, 2*time.Minute)
	n1 := c.Nodes[0]
	if err := c.StopFlanneld(n1); err != nil {
		t.Fatal(err)
	}
	if b, err := testbed.Exec(ctx, n1.NS, "nft", "list", "chain", "ip", "flannel-ipv4", "postrtg"); err != nil || !strings.Contains(string(b), "masquerade") {
		t.Errorf("table ip flannel-ipv4 gone after SIGTERM (%v):\n%s", err, b)
	}
	checkMasq(t, ctx, pods, out.NS, out.Addr)

	if err := c.PutConfig(ctx, "", `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"vxlan"}}`); err != nil {
		t.Fatal(err)
	}
	c.start([]*testbed.Node{n1}, "--ip-masq", "--iptables-resync=2")
	if b, err := testbed.Exec(ctx, n1.NS, "nft", "list", "tables"); err != nil || strings.Contains(string(b), "flannel-ipv4") {
		t.Errorf("nftables table flannel-ipv4 left after switching to iptables mode (%v):\n%s", err, b)
	}
	if b, err := testbed.Exec(ctx, n1.NS, "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG"); err != nil || !strings.Contains(string(b), "MASQUERADE") {
		t.Errorf("no iptables masquerade rules after switching to iptables mode (%v):\n%s", err, b)
	}
	checkMasq(t, ctx, pods, out.NS, out.Addr)
}

// A 9000-byte underlay gives FLANNEL_MTU=8950, and the path carries
// exactly that: an 8922-byte DF payload passes, 8923 does not.
func TestJumboUnderlay(t *testing.T) {
	c := newCluster(t, "jmb", clusterOpts{nodes: 2, mtu: 9000})
	envs := c.start(c.Nodes)
	for n, env := range envs {
		if env.MTU != 8950 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 8950", n.Name, env.MTU)
		}
	}
	pods := c.addPods(c.Nodes)
	ctx := testCtx(t, time.Minute)
	if err := ping(ctx, pods[0].NS, pods[1].IP, 8922, true); err != nil {
		t.Errorf("8922-byte DF ping should pass: %v", err)
	}
	if err := ping(ctx, pods[0].NS, pods[1].IP, 8923, true); err == nil {
		t.Errorf("8923-byte DF ping passed; the overlay MTU is 8950")
	}
}
