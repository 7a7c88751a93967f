package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// secret is a payload no packet header contains by chance: the tests look
// for it in underlay captures.
const secret = "flannel-secret!!"

// pingSecret sends three echoes whose payload repeats secret.
func pingSecret(ctx context.Context, from *testbed.Pod, to *testbed.Pod) error {
	_, err := testbed.PingWith(ctx, from.NS, to.IP, testbed.PingOptions{Count: 3, Interval: 200 * time.Millisecond, Pattern: hex.EncodeToString([]byte(secret))})
	return err
}

// capture is a tcpdump running on a node's underlay interface.
type capture struct {
	cmd  *exec.Cmd
	file string
	done chan error
}

// startCapture runs tcpdump on n's underlay interface with filter and
// returns once it listens.
func startCapture(t *testing.T, n *testbed.Node, filter string) *capture {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("needs tcpdump (scripts/setup.sh installs it): %v", err)
	}
	c := &capture{file: filepath.Join(t.TempDir(), n.Name+".pcap"), done: make(chan error, 1)}
	c.cmd = exec.Command("ip", "netns", "exec", n.NS, "tcpdump", "-i", n.Iface, "--immediate-mode", "-U", "-n", "-s", "0", "-w", c.file, filter)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start tcpdump in %s: %v", n.NS, err)
	}
	t.Cleanup(func() { c.stop() })
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
			}
		}
		c.done <- c.cmd.Wait()
	}()
	select {
	case <-listening:
	case err := <-c.done:
		t.Fatalf("tcpdump in %s exited before listening: %v", n.NS, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("tcpdump in %s not listening after 10 s", n.NS)
	}
	return c
}

func (c *capture) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// result waits until the capture holds what enough returns true for
// (at most 5 s: tcpdump writes what the kernel already filtered a little
// later), stops it, and returns the raw pcap and tcpdump's
// one-line-per-packet reading of it.
func (c *capture) result(t *testing.T, enough func(text string) bool) (raw []byte, text string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("tcpdump", "-r", c.file, "-n").CombinedOutput()
		text = string(out)
		if (err == nil && enough(text)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.stop()
	raw, err := os.ReadFile(c.file)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tcpdump", "-r", c.file, "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r %s: %v\n%s", c.file, err, out)
	}
	return raw, string(out)
}

// deleteLease removes n's lease from etcd, after stopping its flanneld
// (a running one re-creates its lease at once): the node has left.
func deleteLease(t *testing.T, c *cluster, n *testbed.Node, env *subnetenv.Env) {
	t.Helper()
	if err := c.StopFlanneld(n); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, time.Minute)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := testbed.DefaultEtcdPrefix + "/subnets/" + lease.MakeKey(env.Subnet.Masked(), env.IPv6Subnet.Masked())
	resp, err := cli.Delete(ctx, key)
	if err != nil || resp.Deleted != 1 {
		t.Fatalf("delete %s: deleted %v, %v", key, resp, err)
	}
}

// logHas waits until n's flanneld log contains want.
func logHas(t *testing.T, n *testbed.Node, within time.Duration, want string) {
	t.Helper()
	eventually(t, within, "log of "+n.Name+" says "+want, func() error {
		b, err := os.ReadFile(n.LogFile)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(want)) {
			return fmt.Errorf("not in %s", n.LogFile)
		}
		return nil
	})
}

// mtuBoundary checks that a don't-fragment echo of exactly mtu bytes (IP
// packet) passes from a to b and one of mtu+1 bytes does not.
func mtuBoundary(t *testing.T, a, b *testbed.Pod, mtu int) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	fits := mtu - 28 // IPv4 + ICMP headers
	if err := ping(ctx, a.NS, b.IP, fits, true); err != nil {
		t.Errorf("%d-byte DF ping %s -> %s should pass: %v", fits, a.Name, b.Name, err)
	}
	if err := ping(ctx, a.NS, b.IP, fits+1, true); err == nil {
		t.Errorf("%d-byte DF ping %s -> %s passed; the overlay MTU is %d", fits+1, a.Name, b.Name, mtu)
	}
}

// tcpBurst sends a few megabytes over TCP from pod a to pod b with iperf3:
// enough for the kernel to hand the overlay large segments.
func tcpBurst(t *testing.T, a, b *testbed.Pod) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", b.NS, "iperf3", "-s", "-1", "-B", b.IP.String())
	if err := srv.Start(); err != nil {
		t.Fatalf("start iperf3 server in %s: %v", b.NS, err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var err error
	for range 50 { // until the server listens
		if _, err = testbed.Exec(ctx, a.NS, "iperf3", "-c", b.IP.String(), "-n", "4M"); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("iperf3 %s -> %s: %v", a.Name, b.Name, err)
}

// udpPayloads returns the UDP payloads of the IPv4 packets in a pcap file
// of Ethernet frames (tcpdump -w).
func udpPayloads(t *testing.T, pcap []byte) [][]byte {
	t.Helper()
	if len(pcap) < 24 || binary.LittleEndian.Uint32(pcap) != 0xa1b2c3d4 {
		t.Fatalf("not a little-endian pcap file (%d bytes)", len(pcap))
	}
	var out [][]byte
	for rest := pcap[24:]; len(rest) >= 16; {
		n := int(binary.LittleEndian.Uint32(rest[8:12]))
		if len(rest) < 16+n {
			break
		}
		frame := rest[16 : 16+n]
		rest = rest[16+n:]
		if len(frame) < 14+20 || frame[12] != 0x08 || frame[13] != 0x00 || frame[14+9] != 17 {
			continue // not IPv4/UDP
		}
		ihl := int(frame[14]&0x0f) * 4
		if len(frame) >= 14+ihl+8 {
			out = append(out, frame[14+ihl+8:])
		}
	}
	return out
}

// ipPackets splits a udp-backend datagram into the IPv4 packets it
// carries: one, unless the capture saw a UDP GSO batch before the kernel
// cut it into datagrams of gso bytes (veths pass batches whole, so
// tcpdump sees them so). It fails unless every piece is exactly one IPv4
// packet.
func ipPackets(payload []byte, gso int) ([][]byte, error) {
	var pkts [][]byte
	for len(payload) > 0 {
		seg := payload[:min(gso, len(payload))]
		payload = payload[len(seg):]
		if len(seg) < 20 || seg[0]>>4 != 4 || int(binary.BigEndian.Uint16(seg[2:4])) != len(seg) {
			return nil, fmt.Errorf("a %d-byte segment is not one IPv4 packet (starts % x)", len(seg), seg[:min(4, len(seg))])
		}
		pkts = append(pkts, seg)
	}
	return pkts, nil
}
