package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// ipsec over charon: where the kernel lacks ESP (as here) charon's
// userspace ESP is chosen by itself; pods on three nodes ping each other,
// and a capture on the underlay holds ESP-in-UDP but never the payload.
func TestIPSecBackend(t *testing.T) {
	if _, err := os.Stat("/usr/lib/ipsec/charon"); err != nil {
		t.Fatalf("ipsec needs strongSwan's charon (scripts/setup.sh installs it): %v", err)
	}
	psk := strings.Repeat("flannel-ipsec-test-psk-", 5)
	conf, _ := json.Marshal(map[string]any{"Network": "10.244.0.0/16", "Backend": map[string]any{"Type": "ipsec", "PSK": psk}})
	c := newCluster(t, "ips", clusterOpts{nodes: 3, config: string(conf)})
	ctx := testCtx(t, 2*time.Minute)
	since := time.Now()
	for _, n := range c.Nodes {
		env := []string{"FLANNEL_IPSEC_DIR=" + filepath.Join(n.Dir, "ipsec")}
		if err := c.StartFlanneldEnv(ctx, n, env); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- charon log of %s\n%s", n.Name, grepFile(filepath.Join(n.Dir, "ipsec", "charon.log"), "CHILD_SA|route|TUN|ipsec0|error|fail|unable|PROPOSAL|proposal"))
			}
		}
	})
	envs := c.waitReady(c.Nodes, since, time.Minute)
	for n, env := range envs {
		// 1500 − 77 (ESP) − 8 (UDP) = 1415, capped at the 1400 of
		// charon's userspace ESP device.
		if env.MTU != 1400 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 1400", n.Name, env.MTU)
		}
	}
	waitLog(t, c, c.Nodes[0], regexp.MustCompile(`ESP runs in userspace`), 10*time.Second)
	pods := c.addPods(c.Nodes)
	eventually(t, 30*time.Second, "SAs up between every pair", func() error {
		for _, a := range pods {
			for _, b := range pods {
				if a.Node != b.Node {
					if err := testbed.Ping(ctx, a.NS, b.IP, 56, false); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	allPairsPing(t, pods)
	// Full-size packets too (FLANNEL_MTU − 28): libipsec cuts packets
	// longer than its buffer.
	full := envs[c.Nodes[0]].MTU - 28
	if err := ping(ctx, pods[0].NS, pods[1].IP, full, true); err != nil {
		t.Errorf("a full-size (%d-byte DF) ping over ipsec should pass: %v", full, err)
	}

	pattern := "f1a77e1c0ffee0dd"
	capture := filepath.Join(t.TempDir(), "underlay.pcap")
	// On n1's port of the underlay bridge: the bridge device itself sees
	// only traffic addressed to the hub.
	dump := exec.Command("ip", "netns", "exec", c.Hub.NS, "tcpdump", "--immediate-mode", "-i", c.Nodes[0].Name, "-U", "-s", "0", "-w", capture, "udp")
	stderr, err := dump.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	// tcpdump says "listening on ul0" once its capture is open.
	if line, err := bufio.NewReader(stderr).ReadString('\n'); err != nil || !strings.Contains(line, "listening on") {
		t.Fatalf("tcpdump did not start: %q %v", line, err)
	}
	if out, err := testbed.PingWith(ctx, pods[0].NS, pods[1].IP, testbed.PingOptions{Count: 5, Interval: 200 * time.Millisecond, Pattern: pattern}); err != nil {
		t.Errorf("ping with a pattern: %v: %s", err, out)
	}
	_ = dump.Process.Signal(os.Interrupt)
	rest, _ := io.ReadAll(stderr)
	_ = dump.Wait()
	if !strings.Contains(string(rest), " packets captured") || strings.HasPrefix(string(rest), "0 packets") {
		t.Errorf("tcpdump captured nothing: %s", rest)
	}
	data, err := os.ReadFile(capture)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := hex.DecodeString(pattern)
	if bytes.Contains(data, raw) {
		t.Errorf("the pod payload pattern %s appears in clear on the underlay", pattern)
	}
	out, err := exec.CommandContext(context.Background(), "tcpdump", "-nr", capture, "udp port 4500").CombinedOutput()
	if err != nil || strings.Count(string(out), "UDP-encap") < 5 {
		t.Errorf("expected ESP-in-UDP on port 4500 in the capture, got: %v\n%s", err, out)
	}

	// A node that leaves: the others close its SAs.
	gone := c.Nodes[2]
	if err := c.StopFlanneld(gone); err != nil {
		t.Fatal(err)
	}
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Delete(ctx, leaseKey(envs[gone].Subnet.Masked())); err != nil {
		t.Fatal(err)
	}
	vici := "unix://" + filepath.Join(c.Nodes[0].Dir, "ipsec", "run", "charon.vici")
	eventually(t, 10*time.Second, "n1 closes its SAs with the departed n3", func() error {
		out, err := exec.CommandContext(ctx, "swanctl", "--list-sas", "--uri", vici).CombinedOutput()
		if err != nil {
			return fmt.Errorf("swanctl --list-sas: %v: %s", err, out)
		}
		if strings.Contains(string(out), gone.Addr.String()+"[") || !strings.Contains(string(out), c.Nodes[1].Addr.String()+"[") {
			return fmt.Errorf("SAs of n1:\n%s", out)
		}
		return nil
	})
}

func grepFile(path, re string) string {
	b, _ := os.ReadFile(path)
	var out []string
	r := regexp.MustCompile(re)
	for _, l := range strings.Split(string(b), "\n") {
		if r.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
