//go:build kubernetes

package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// podToPod: every pod reaches every pod on another node, on every address
// family it has: ICMP from this machine's ping in the pod's namespace, and
// HTTP from the pod's own netexec (its /dial endpoint, as Kubernetes' e2e
// tests use it), answered by the right pod.
func (l *kubeLab) podToPod(t *testing.T, pods map[string]webPod) {
	t.Helper()
	for _, src := range l.nodes {
		for _, dst := range l.nodes {
			if src == dst {
				continue
			}
			for _, ip := range pods[dst].ips {
				l.reach(t, pods[src], pods[dst], ip)
			}
		}
	}
}

func (l *kubeLab) reach(t *testing.T, src, dst webPod, ip netip.Addr) {
	t.Helper()
	if out, err := l.exec(30*time.Second, src.target(), "ping", "-c", "3", "-i", "0.2", "-W", "2", ip.String()); err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Errorf("%s -> %s %s: ping: %v\n%s", src.name, dst.name, ip, err, out)
	}
	if got, err := l.dial(src, ip.String(), netexecPort); err != nil || got != dst.name {
		t.Errorf("%s -> %s %s: HTTP /hostname: %q, %v", src.name, dst.name, ip, got, err)
	}
}

// dial asks src's netexec to fetch /hostname from host:port (a name is
// resolved inside the pod, by the cluster's DNS) and returns the answer.
func (l *kubeLab) dial(src webPod, host string, port int) (string, error) {
	q := url.Values{"request": {"hostname"}, "protocol": {"http"}, "host": {host}, "port": {strconv.Itoa(port)}, "tries": {"1"}}
	out, err := l.exec(time.Minute, src.target(), "curl", "-sS", "-m", "20",
		fmt.Sprintf("http://127.0.0.1:%d/dial?%s", netexecPort, q.Encode()))
	if err != nil {
		return "", err
	}
	var r struct{ Responses, Errors []string }
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return "", fmt.Errorf("netexec /dial said %q: %w", out, err)
	}
	if len(r.Responses) != 1 {
		return "", fmt.Errorf("netexec /dial: responses %q, errors %q", r.Responses, r.Errors)
	}
	return strings.TrimSpace(r.Responses[0]), nil
}

// serviceByName: from src's pod, the Service of dst's node is resolved by
// CoreDNS (the pod's resolv.conf, the kube-dns Service, possibly on another
// node) and its ClusterIP (kube-proxy's rules) leads to the pod on dst.
// CoreDNS may still be starting: retried for a minute.
func (l *kubeLab) serviceByName(t *testing.T, src, dst webPod) {
	t.Helper()
	name := fmt.Sprintf("web-%s.%s.svc.cluster.local", dst.node, testNS)
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := l.dial(src, name, 80)
		if err == nil && got == dst.name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s -> Service %s: %q, %v", src.name, name, got, err)
		}
		time.Sleep(time.Second)
	}
}

// hostPortOf: from src's pod, dst's hostPort on its node's underlay
// address leads to the pod on dst (DNAT by portmap on dst's node; the
// reply is translated back by conntrack, which the eBPF fast path must
// leave to the kernel).
func (l *kubeLab) hostPortOf(t *testing.T, src, dst webPod, node netip.Addr) {
	t.Helper()
	if got, err := l.dial(src, node.String(), hostPort); err != nil || got != dst.name {
		t.Errorf("%s -> hostPort %s:%d of %s: %q, %v", src.name, node, hostPort, dst.name, got, err)
	}
}

// pinger pings dst from a pod every 100 ms until stopped, and reports the
// longest run of lost replies.
type pinger struct {
	what string
	cmd  *exec.Cmd
	out  strings.Builder
	done chan error
}

func (l *kubeLab) startPinger(t *testing.T, src webPod, dst netip.Addr) *pinger {
	t.Helper()
	p := &pinger{what: src.name + " -> " + dst.String(), done: make(chan error, 1)}
	argv := []string{"lab", "exec", "--name", l.name, "--state-root", l.root, src.target(), "--",
		"ping", "-i", "0.1", "-W", "1", dst.String()}
	p.cmd = exec.Command(flannelctl, argv...)
	p.cmd.Stdout = &syncWriter{b: &p.out}
	// Its own process group: SIGINT reaches ping, which prints and exits
	// (lab exec ignores it and waits).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

var icmpSeq = regexp.MustCompile(`icmp_seq=(\d+)`)

// stop ends the pinger and returns the longest gap between answered
// probes, and how many were sent.
func (p *pinger) stop() (time.Duration, int) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	var seqs []int
	for _, m := range icmpSeq.FindAllStringSubmatch(p.out.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		seqs = append(seqs, n)
	}
	if len(seqs) == 0 {
		return time.Hour, 0
	}
	gap := seqs[0] - 1 // lost before the first answer
	for i := 1; i < len(seqs); i++ {
		gap = max(gap, seqs[i]-seqs[i-1]-1)
	}
	return time.Duration(gap) * 100 * time.Millisecond, seqs[len(seqs)-1]
}

type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// rolloutRestart restarts the flannel DaemonSet as an operator does, while
// pods on different nodes ping each other; every node keeps its
// FLANNEL_SUBNET, and no pair loses more than maxLoss.
func (l *kubeLab) rolloutRestart(t *testing.T, pods map[string]webPod, maxLoss time.Duration) {
	t.Helper()
	before := map[string]string{}
	for _, n := range l.nodes {
		before[n] = flannelSubnet(l.subnetEnv(n))
	}
	var ps []*pinger
	for i, n := range l.nodes {
		dst := pods[l.nodes[(i+1)%len(l.nodes)]]
		ps = append(ps, l.startPinger(t, pods[n], dst.ips[0]))
	}
	start := time.Now()
	l.kubectl("-n", "kube-flannel", "rollout", "restart", "ds/kube-flannel-ds")
	l.kubectl("-n", "kube-flannel", "rollout", "status", "ds/kube-flannel-ds", "--timeout=5m")
	took := time.Since(start)
	time.Sleep(2 * time.Second) // probes after the last restart count too
	for _, p := range ps {
		gap, sent := p.stop()
		t.Logf("rollout restart (%s): %s lost at most %s of %d probes' time", took.Round(100*time.Millisecond), p.what, gap, sent)
		if gap > maxLoss {
			t.Errorf("during the rollout restart %s lost connectivity for %s (allowed %s)", p.what, gap, maxLoss)
		}
	}
	for _, n := range l.nodes {
		if after := flannelSubnet(l.subnetEnv(n)); after != before[n] || after == "" {
			t.Errorf("node %s: FLANNEL_SUBNET %q before the restart, %q after", n, before[n], after)
		}
	}
}

func flannelSubnet(env string) string {
	for _, line := range strings.Split(env, "\n") {
		if v, ok := strings.CutPrefix(line, "FLANNEL_SUBNET="); ok {
			return v
		}
	}
	return ""
}

// throughput measures pod-to-pod TCP throughput between two nodes and the
// bare underlay between the same nodes in the same run, and logs both
// and their ratio.
func (l *kubeLab) throughput(t *testing.T, label string, src, dst webPod, srcNode, dstNode netip.Addr) {
	t.Helper()
	pod := l.iperf(t, src.target(), dst.target(), dst.ips[0])
	under := l.iperf(t, src.node, dst.node, dstNode)
	if pod == 0 || under == 0 {
		return
	}
	t.Logf("iperf3 %s: pod-to-pod %.2f Gbit/s, underlay %.2f Gbit/s, ratio %.2f", label, pod/1e9, under/1e9, pod/under)
}

var bitsPerSecond = regexp.MustCompile(`"bits_per_second":\s*([0-9.e+]+)`)

// iperf runs an iperf3 server in dstTarget and a 3 s client in srcTarget
// (this machine's iperf3, in their network namespaces) and returns the
// receiver's bits per second.
func (l *kubeLab) iperf(t *testing.T, srcTarget, dstTarget string, dst netip.Addr) float64 {
	t.Helper()
	// `lab exec` starts a process of its own for each try: on a loaded
	// machine that takes seconds, so the deadlines are generous.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	server := exec.CommandContext(ctx, flannelctl, "lab", "exec", "--name", l.name, "--state-root", l.root, dstTarget, "--",
		"iperf3", "-s", "-1", "-p", "5201")
	var sout syncWriter
	sout.b = &strings.Builder{}
	server.Stdout, server.Stderr = &sout, &sout
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = server.Wait(); close(exited) }()
	defer func() { _ = server.Process.Kill(); <-exited }()
	var out string
	var err error
	for deadline := time.Now().Add(90 * time.Second); ; { // until the server listens
		out, err = l.exec(30*time.Second, srcTarget, "iperf3", "-c", dst.String(), "-p", "5201", "-t", "3", "-J")
		if err == nil && !bitsPerSecond.MatchString(out) {
			// iperf3 -J may exit 0 with "unable to connect" in its JSON.
			err = fmt.Errorf("no result: %s", strings.Join(strings.Fields(out), " "))
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-exited:
			t.Errorf("iperf3 server in %s exited: %s", dstTarget, sout.String())
			return 0
		case <-time.After(300 * time.Millisecond):
		}
	}
	if err != nil {
		t.Errorf("iperf3 %s -> %s: %v; server: %s", srcTarget, dst, err, sout.String())
		return 0
	}
	m := bitsPerSecond.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		t.Errorf("iperf3 %s -> %s: no result in %q", srcTarget, dst, out)
		return 0
	}
	bps, _ := strconv.ParseFloat(m[len(m)-1][1], 64) // end.sum_received
	return bps
}
