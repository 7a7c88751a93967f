package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/testbed"
)

// A DROP rule that another firewall appended to FORWARD before flanneld
// started still drops: flanneld appends its jump to FLANNEL-FWD, as
// upstream does, and moves it back to the end at every start (here: a
// restart after the rule was added behind the running daemon's jump).
func TestForeignDropRuleBeforeFlannelJump(t *testing.T) {
	c := newCluster(t, "fjmp", clusterOpts{nodes: 2})
	c.start(c.Nodes)
	ctx := testCtx(t, 3*time.Minute)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	a, err := c.AddPod(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := c.AddPod(ctx, n2)
	if err != nil {
		t.Fatal(err)
	}
	open, err := c.AddPod(ctx, n2)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*testbed.Pod{blocked, open} {
		if err := ping(ctx, a.NS, p.IP, 56, false); err != nil {
			t.Fatalf("before the DROP rule: pod %s -> %s: %v", a.Name, p.Name, err)
		}
	}

	if err := c.StopFlanneld(n1); err != nil {
		t.Fatal(err)
	}
	drop := []string{"iptables", "-t", "filter", "-A", "FORWARD", "-s", a.IP.String(), "-d", blocked.IP.String(), "-j", "DROP"}
	if _, err := testbed.Exec(ctx, n1.NS, drop...); err != nil {
		t.Fatal(err)
	}
	c.start([]*testbed.Node{n1})

	if err := ping(ctx, a.NS, blocked.IP, 56, false); err == nil {
		b, _ := testbed.Exec(ctx, n1.NS, "iptables", "-t", "filter", "-S", "FORWARD")
		t.Errorf("pod %s -> %s passed although node %s's FORWARD drops it; flannel's ACCEPT ran first:\n%s", a.Name, blocked.Name, n1.Name, b)
	}
	if err := ping(ctx, a.NS, open.IP, 56, false); err != nil {
		t.Errorf("pod %s -> %s (not dropped): %v", a.Name, open.Name, err)
	}
	b, err := testbed.Exec(ctx, n1.NS, "iptables", "-t", "filter", "-S", "FORWARD")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("-A FORWARD -s %s/32 -d %s/32 -j DROP\n-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n", a.IP, blocked.IP)
	if got := string(b); len(got) < len(want) || got[len(got)-len(want):] != want {
		t.Errorf("node %s's FORWARD chain ends\n%s\nwant it to end\n%s", n1.Name, got, want)
	}
}
