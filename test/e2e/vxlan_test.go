package e2e

import (
	"testing"
	"time"
)

// Three VXLAN nodes on a 1500-byte underlay: every cross-node pod pair
// pings, subnet.env promises 1450 and the path delivers exactly that: a
// 1422-byte don't-fragment payload (1450 − 20 IP − 8 ICMP) passes, 1423
// does not.
func TestVXLANThreeNodes(t *testing.T) {
	c := newCluster(t, "vx3", clusterOpts{nodes: 3})
	envs := c.start(c.Nodes)
	for n, env := range envs {
		if env.MTU != 1450 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 1450", n.Name, env.MTU)
		}
		if env.Network.String() != "10.244.0.0/16" || env.Subnet.Bits() != 24 {
			t.Errorf("node %s: FLANNEL_NETWORK=%s FLANNEL_SUBNET=%s, want a /24 in 10.244.0.0/16", n.Name, env.Network, env.Subnet)
		}
	}
	pods := c.addPods(c.Nodes)
	if pairs := allPairsPing(t, pods); pairs != 6 {
		t.Fatalf("checked %d pairs, want 6", pairs)
	}

	ctx := testCtx(t, time.Minute)
	a, b := pods[0], pods[1]
	if err := ping(ctx, a.NS, b.IP, 1422, true); err != nil {
		t.Errorf("1422-byte DF ping %s -> %s should pass: %v", a.Name, b.Name, err)
	}
	if err := ping(ctx, a.NS, b.IP, 1423, true); err == nil {
		t.Errorf("1423-byte DF ping %s -> %s passed; the overlay MTU is 1450", a.Name, b.Name)
	}
	for _, n := range c.Nodes {
		for _, m := range c.Nodes {
			if n == m {
				continue
			}
			st, err := vxlanState(n.NS, "flannel.1", envs[m].Subnet.Masked(), m.Addr)
			if err != nil {
				t.Fatal(err)
			}
			if !st.all() {
				t.Errorf("node %s for peer %s: %s, want all three", n.Name, m.Name, st)
			}
		}
	}
}
