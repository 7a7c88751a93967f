package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/flannelgo/flannel/internal/droplog"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// flood is how many denied packets TestPolicyDropLog sends at once.
const flood = 100000

// flanneld --network-policy logs what policy drops: a denied connection
// shows in `flannelctl policy drops --follow` within 1 s, naming both pods
// and the policy; a flood of denied packets costs flanneld at most 5 % of
// one core (the kernel samples it) and the drop counter counts every one.
func TestPolicyDropLog(t *testing.T) {
	l := newNPCluster(t)
	ctx := testCtx(t, 5*time.Minute)
	node := l.Nodes[0]
	from, to := l.pod("y/b"), l.pod("x/a")
	l.change(ctx, func() {
		l.createPolicy(ctx, "x", "deny-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npIngress})
	})
	records := followDrops(ctx, t, node)

	start := time.Now()
	if probe(ctx, from.tbPod, to.tbPod.IP, 80, "tcp") {
		t.Fatalf("%s -> %s allowed under deny-a", from, to)
	}
	rec := waitRecord(t, records, 5*time.Second, func(r droplog.Record) bool {
		return r.Source.String() == "y/b" && r.Dest.String() == "x/a" && r.Port == 80 && r.Proto == "TCP"
	})
	took := rec.seen.Sub(start)
	t.Logf("record %+v in `policy drops` %s after the connection attempt began", rec.Record, took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the denied connection showed in policy drops after %s, want within 1s", took)
	}
	if rec.Direction != "ingress" || !slices.Equal(rec.Policies, []string{"x/deny-a"}) || rec.Node != node.Name {
		t.Errorf("record %+v: want direction ingress, policies [x/deny-a], node %s", rec.Record, node.Name)
	}
	floodCost(ctx, t, l, records)
}

// floodCost sends the flood from y/a, on x/a's node, and measures
// flanneld's CPU time over it from /proc/<pid>/stat.
func floodCost(ctx context.Context, t *testing.T, l *npCluster, records <-chan seenRecord) {
	node, src, dst := l.Nodes[0], l.pod("y/a"), l.pod("x/a")
	counter := `flannel_policy_dropped_packets_total{direction="ingress",namespace="x",pod="a"}`
	before, err := metric(ctx, node, counter)
	if err != nil {
		t.Fatal(err)
	}
	pid := l.Flanneld(node).Pid
	cpu0, start := procCPU(t, pid), time.Now()
	sendFlood(ctx, t, src.tbPod, dst.tbPod.IP.String()+":81")
	sent := time.Since(start)
	eventually(t, 10*time.Second, "the drop counter to count the flood", func() error {
		after, err := metric(ctx, node, counter)
		if err != nil || after-before < flood {
			return fmt.Errorf("%s rose by %v (%v), want %d", counter, after-before, err, flood)
		}
		return nil
	})
	// The last records reach flanneld within the NFLOG flush interval.
	quiet := drainRecords(records, 500*time.Millisecond)
	wall, cpu := time.Since(start), procCPU(t, pid)-cpu0
	after, _ := metric(ctx, node, counter)
	logged, _ := metric(ctx, node, `flannel_drop_log_records_total{reason="policy"}`)
	share := float64(cpu) / float64(wall) * 100
	t.Logf("flood of %d denied UDP packets sent in %s: flanneld used %s of CPU over %s (%.1f%% of one core); counter rose by %v; %d records in the window, %v logged in all",
		flood, sent.Round(time.Millisecond), cpu, wall.Round(time.Millisecond), share, after-before, quiet, logged)
	if after-before != flood {
		t.Errorf("%s rose by %v, want exactly %d", counter, after-before, flood)
	}
	if share > 5 {
		t.Errorf("flanneld used %.1f%% of one core during the flood, want at most 5%%", share)
	}
}

// sendFlood writes the datagrams from the pod, paced so the bridge's
// backlog never overflows (a packet lost before the policy rule would not
// be counted, and the test is about the counting).
func sendFlood(ctx context.Context, t *testing.T, from *testbed.Pod, to string) {
	conn, err := testbed.DialInNamespace(ctx, from.NS, "udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := []byte("flood")
	for i := range flood {
		if _, err := conn.Write(payload); err != nil {
			t.Fatalf("send denied packet %d: %v", i, err)
		}
		if i%200 == 199 {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

type seenRecord struct {
	droplog.Record
	seen time.Time
}

// followDrops runs `flannelctl policy drops --follow --output json` in the
// node's namespace against its flanneld.
func followDrops(ctx context.Context, t *testing.T, n *testbed.Node) <-chan seenRecord {
	ctl := buildFlannelctl(t)
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS, ctl, "policy", "drops", "--follow", "--output", "json",
		"--address", "127.0.0.1:"+strconv.Itoa(metricsPort))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	ch := make(chan seenRecord, 4096)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r droplog.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("policy drops printed %q: %v", sc.Text(), err)
				return
			}
			ch <- seenRecord{Record: r, seen: time.Now()}
		}
	}()
	return ch
}

func buildFlannelctl(t *testing.T) string {
	ctl := filepath.Join(bins.dir, "flannelctl")
	if err := goBuild(ctl, "./cmd/flannelctl"); err != nil {
		t.Fatal(err)
	}
	return ctl
}

func waitRecord(t *testing.T, ch <-chan seenRecord, within time.Duration, match func(droplog.Record) bool) seenRecord {
	t.Helper()
	timeout := time.After(within)
	var seen []string
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatalf("policy drops ended; it printed %s", strings.Join(seen, "; "))
			}
			if match(r.Record) {
				return r
			}
			seen = append(seen, fmt.Sprintf("%+v", r.Record))
		case <-timeout:
			t.Fatalf("no matching record in policy drops within %s; it printed %s", within, strings.Join(seen, "; "))
		}
	}
}

// drainRecords reads records until none came for quiet, and counts them.
func drainRecords(ch <-chan seenRecord, quiet time.Duration) int {
	n := 0
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return n
			}
			n++
		case <-time.After(quiet):
			return n
		}
	}
}

// procCPU is the CPU time (user and system) pid has used, from
// /proc/<pid>/stat (in clock ticks of 10 ms).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	p, err := procfs.NewProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(st.CPUTime() * float64(time.Second))
}

// nodeDrops reads the records node n's flanneld keeps (its /policy/drops).
func nodeDrops(ctx context.Context, n *testbed.Node) ([]droplog.Record, error) {
	hc := nsClient(n.NS, 5*time.Second)
	u := fmt.Sprintf("http://127.0.0.1:%d%s", metricsPort, droplog.Path)
	resp, err := hc.Get(u)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	var out []droplog.Record
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r droplog.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("node %s: %s: %w", n.Name, u, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// nsClient is an HTTP client whose connections are made inside network
// namespace ns, one per request (kept-alive connections of throw-away
// clients would pile up: Prometheus, for one, stops accepting at 512).
func nsClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, ns, network, addr)
		},
	}}
}
