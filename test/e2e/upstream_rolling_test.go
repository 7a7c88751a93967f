//go:build upstream

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// A cluster of upstream flanneld nodes (one etcd) is replaced by ours one
// node at a time, as an operator migrates: each node keeps its subnet,
// and pods on every pair of nodes ping each other all along (every 100 ms,
// counted). For vxlan and host-gw the data plane lives in the kernel and
// survives the restart, so no probe may be lost; udp's lives in
// flanneld's process, so its pause is counted and reported, and every
// pair must answer again after each step. The udp run uses the minimal
// config without Backend, which both sides must read as udp.
func TestUpstreamRollingReplacement(t *testing.T) {
	bin := os.Getenv("FLANNEL_UPSTREAM_FLANNELD")
	if bin == "" {
		t.Fatal("FLANNEL_UPSTREAM_FLANNELD is unset: set it to an upstream flanneld binary (scripts/interop.sh runs this test)")
	}
	for _, c := range []struct {
		name, conf string
		lossless   bool
	}{
		{"vxlan", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, true},
		{"host-gw", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, true},
		{"udp-minimal", `{"Network":"10.244.0.0/16"}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := newCluster(t, "roll"+c.name[:2], clusterOpts{nodes: 3, config: c.conf})
			for _, n := range cl.Nodes {
				n.FlanneldPath = bin
			}
			before := cl.start(cl.Nodes)
			requireUpstreamRan(t, cl.Nodes[0])
			pods := cl.addPods(cl.Nodes)
			pingers := startPingers(t, pods)
			for _, n := range cl.Nodes {
				if err := cl.StopFlanneld(n); err != nil {
					t.Fatal(err)
				}
				n.FlanneldPath = bins.flanneld
				env := cl.start([]*testbed.Node{n})[n]
				if env.Subnet != before[n].Subnet {
					t.Errorf("node %s: subnet %s after the replacement, %s before", n.Name, env.Subnet, before[n].Subnet)
				}
				if pairs := allPairsPing(t, pods); pairs != 6 {
					t.Errorf("after replacing %s: %d of 6 pod pairs answered", n.Name, pairs)
				}
			}
			for _, p := range pingers {
				sent, got := p.stop(t)
				t.Logf("%s: %d of %d probes answered through the replacement", p.what, got, sent)
				if sent == 0 || (c.lossless && got != sent) || got == 0 {
					t.Errorf("%s: %d of %d probes answered", p.what, got, sent)
				}
			}
		})
	}
}

type pinger struct {
	what string
	cmd  *exec.Cmd
	out  *os.File
}

// startPingers pings every pod pair every 100 ms until stopped.
func startPingers(t *testing.T, pods []*testbed.Pod) []*pinger {
	t.Helper()
	var ps []*pinger
	for _, a := range pods {
		for _, b := range pods {
			if a == b {
				continue
			}
			f, err := os.CreateTemp(t.TempDir(), "ping")
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("ip", "netns", "exec", a.NS, "ping", "-i", "0.1", "-W", "1", b.IP.String())
			cmd.Stdout = f
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			p := &pinger{what: fmt.Sprintf("%s -> %s", a.Name, b.Name), cmd: cmd, out: f}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			ps = append(ps, p)
		}
	}
	time.Sleep(time.Second)
	return ps
}

// stop ends the pinger after its replies in flight came back and returns
// what it sent and got answered.
func (p *pinger) stop(t *testing.T) (sent, got int) {
	t.Helper()
	time.Sleep(time.Second)
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
	out, err := os.ReadFile(p.out.Name())
	if err != nil {
		t.Fatal(err)
	}
	m := pingSummary.FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no ping summary in %q", p.what, out)
	}
	sent, _ = strconv.Atoi(string(m[1]))
	got, _ = strconv.Atoi(string(m[2]))
	return sent, got
}
