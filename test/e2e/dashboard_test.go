package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/droplog"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

const (
	dashboardPath  = "../../deploy/monitoring/flannel-dashboard.json"
	prometheusAddr = "127.0.0.1:19090"
)

// Every query of the Grafana dashboard returns data from a real Prometheus
// scraping a 3-node cluster (flanneld --network-policy against a real
// kube-apiserver) for about a minute, once the cluster has seen what the
// panels show: a denied connection and a repaired route.
func TestMonitoringDashboard(t *testing.T) {
	tbtest.NeedTools(t, "prometheus")
	queries := dashboardQueries(t)
	// /metrics on every address of the node (so the hub reaches it), at
	// the port the helpers read; the health endpoints alone on another.
	l := newNPCluster(t, "--metrics-address=0.0.0.0:"+strconv.Itoa(metricsPort), "--healthz-port="+strconv.Itoa(healthOnlyPort))
	ctx := testCtx(t, 6*time.Minute)
	checkHealthOnly(ctx, t, l.Nodes[0])
	l.change(ctx, func() {
		l.createPolicy(ctx, "x", "deny-a", npSpec{PodSelector: *lsel("pod", "a"), PolicyTypes: npIngress})
	})
	if probe(ctx, l.pod("y/b").tbPod, l.pod("x/a").tbPod.IP, 80, "udp") {
		t.Fatal("y/b -> x/a allowed under deny-a")
	}
	n1 := l.Nodes[0]
	tbtest.Run(t, "ip", "-n", n1.NS, "route", "del", podCIDR(l.Nodes[1].Index).String())
	startPrometheus(ctx, t, l.cluster)
	started := time.Now()
	last := ""
	eventually(t, 3*time.Minute, "every dashboard query to return data", func() error {
		empty, err := emptyQueries(ctx, l.Hub, queries)
		if msg := strings.Join(empty, "; "); err == nil && len(empty) > 0 && msg != last {
			last = msg
			t.Logf("%s after Prometheus started, %d queries return nothing: %s", time.Since(started).Round(time.Second), len(empty), msg)
		}
		if err == nil && len(empty) > 0 {
			err = fmt.Errorf("%d of %d queries return nothing:\n%s", len(empty), len(queries), strings.Join(empty, "\n"))
		}
		return err
	})
	t.Logf("all %d queries of the dashboard's panels returned data %s after Prometheus started", len(queries), time.Since(started).Round(time.Second))
	// The figure is a minute of scraping: the panels must still
	// show data then (nothing went stale, no series vanished).
	if err := ctxwait.Sleep(ctx, time.Minute-time.Since(started)); err != nil {
		t.Fatal(err)
	}
	empty, err := emptyQueries(ctx, l.Hub, queries)
	if err != nil || len(empty) > 0 {
		t.Fatalf("after %s of scraping (%v), queries without data:\n%s", time.Since(started).Round(time.Second), err, strings.Join(empty, "\n"))
	}
	t.Logf("after %s of scraping 3 nodes every 5 s, all %d queries still return data", time.Since(started).Round(time.Second), len(queries))
	dropsAcrossNodes(ctx, t, l)
}

// dropsAcrossNodes: `flannelctl policy drops --all-nodes`, run beside the
// API server, asks every node's flanneld at its InternalIP and finds the
// denied probe on x/a's node.
func dropsAcrossNodes(ctx context.Context, t *testing.T, l *npCluster) {
	for _, n := range l.Nodes {
		node := l.node(ctx, n.Name)
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.Addr.String()}}
		if _, err := l.cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("set the InternalIP of node %s: %v", n.Name, err)
		}
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.Hub.NS, buildFlannelctl(t), "policy", "drops", "--all-nodes",
		"--kubeconfig", l.api.AdminKubeconfig, "--address", "127.0.0.1:"+strconv.Itoa(metricsPort), "--namespace", "x", "--output", "json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("policy drops --all-nodes: %v\n%s", err, out)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r droplog.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("policy drops printed %q: %v", line, err)
		}
		found = found || r.Node == l.Nodes[0].Name && r.Source.String() == "y/b" && r.Dest.String() == "x/a" && slices.Equal(r.Policies, []string{"x/deny-a"})
	}
	if !found {
		t.Errorf("policy drops --all-nodes lacks y/b -> x/a on %s:\n%s", l.Nodes[0].Name, out)
	}
}

// emptyQueries runs every query and lists those that returned no series.
func emptyQueries(ctx context.Context, hub *testbed.Host, queries []panelQuery) ([]string, error) {
	var empty []string
	for _, q := range queries {
		n, err := promQuery(ctx, hub, q.expr)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			empty = append(empty, fmt.Sprintf("%s: %s", q.panel, q.expr))
		}
	}
	return empty, nil
}

// healthOnlyPort is the healthz port when --metrics-address is set.
const healthOnlyPort = 10246

// checkHealthOnly: with --metrics-address the healthz port answers the
// probes and serves no metrics.
func checkHealthOnly(ctx context.Context, t *testing.T, n *testbed.Node) {
	hc := nsClient(n.NS, 5*time.Second)
	for path, want := range map[string]int{"/readyz": http.StatusOK, "/metrics": http.StatusNotFound, droplog.Path: http.StatusNotFound} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", healthOnlyPort, path), nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("healthz port of %s: %v", n.Name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s on the healthz port with --metrics-address: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

type panelQuery struct{ panel, expr string }

// dashboardQueries are the dashboard's expressions as Grafana sends them,
// its variables replaced (as scripts/promqlcheck does).
func dashboardQueries(t *testing.T) []panelQuery {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h", "${instance}", ".*", "$instance", ".*")
	var out []panelQuery
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, panelQuery{p.Title, vars.Replace(tg.Expr)})
		}
	}
	return out
}

// startPrometheus runs Debian's prometheus in the hub namespace, scraping
// every node's flanneld every 5 s; the testbed stops it.
func startPrometheus(ctx context.Context, t *testing.T, c *cluster) {
	dir := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", tailLines(string(log), 40))
		}
	})
	var targets []string
	for _, n := range c.Nodes {
		targets = append(targets, strconv.Quote(net.JoinHostPort(n.Addr.String(), strconv.Itoa(metricsPort))))
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 5s, evaluation_interval: 5s}
scrape_configs:
  - job_name: flannel
    honor_labels: true
    static_configs: [{targets: [%s]}]
`, strings.Join(targets, ", "))
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := c.StartProcess(ctx, c.Hub.NS, filepath.Join(dir, "prometheus.log"), "prometheus",
		"--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+prometheusAddr)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "prometheus to answer", func() error {
		_, err := promQuery(ctx, c.Hub, "up")
		return err
	})
}

// promQuery runs an instant query and returns how many series answered.
func promQuery(ctx context.Context, hub *testbed.Host, expr string) (int, error) {
	hc := nsClient(hub.NS, 10*time.Second)
	u := "http://" + prometheusAddr + "/api/v1/query?query=" + url.QueryEscape(expr)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("query %q: %w", expr, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %q: %s", expr, r.Error)
	}
	return len(r.Data.Result), nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
