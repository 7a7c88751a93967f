package catalog

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/METRICS.md")

const docPath = "../../../docs/METRICS.md"

// docs/METRICS.md is what the registry says.
func TestMetricsDoc(t *testing.T) {
	ms, err := All()
	if err != nil {
		t.Fatal(err)
	}
	want := Markdown(ms)
	if *update {
		if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("docs/METRICS.md is out of date: run go test ./internal/metrics/catalog -run TestMetricsDoc -update")
	}
}

// The catalog holds the metrics the kit relies on, with their types, and
// durations follow Prometheus' naming.
func TestCatalog(t *testing.T) {
	ms, err := All()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Metric{}
	for _, m := range ms {
		if _, dup := byName[m.Name]; dup {
			t.Errorf("%s twice", m.Name)
		}
		byName[m.Name] = m
		if strings.HasSuffix(m.Name, "_seconds") && m.Type == "histogram" && !strings.HasSuffix(m.Name, "_duration_seconds") && !strings.HasSuffix(m.Name, "_rtt_seconds") {
			t.Errorf("%s: a histogram of durations is named *_duration_seconds", m.Name)
		}
	}
	for name, typ := range map[string]string{
		"flannel_build_info": "gauge", "flannel_subnet_pool_used": "gauge", "flannel_subnet_pool_capacity": "gauge",
		"flannel_lease_event_apply_duration_seconds": "histogram", "flannel_policy_dropped_packets_total": "counter",
		"flannel_peer_probe_rtt_seconds": "histogram", "flannel_ready": "gauge", "flannel_udp_send_errors_total": "counter",
	} {
		if byName[name].Type != typ {
			t.Errorf("%s: type %q, want %q", name, byName[name].Type, typ)
		}
	}
	if l := byName["flannel_build_info"].Labels; strings.Join(l, ",") != "version,backend" {
		t.Errorf("flannel_build_info labels %v", l)
	}
}
