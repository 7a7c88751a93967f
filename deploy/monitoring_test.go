package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/metrics/catalog"
)

const (
	rulesFile     = "monitoring/flannel-alerts.rules.yaml"
	rulesTests    = "monitoring/flannel-alerts.test.yaml"
	dashboardFile = "monitoring/flannel-dashboard.json"
)

// The rules are valid and every alert's unit tests pass (promtool).
func TestAlertRulesPromtool(t *testing.T) {
	tbtest.NeedTools(t, "promtool")
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTests}} {
		out, err := exec.Command("promtool", args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every alert of the rules file has a promtool unit test, and the summary,
// description and command annotations.
func TestEveryAlertTested(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	readYAML(t, rulesFile, &rules)
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	readYAML(t, rulesTests, &tests)
	firing := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			}
		}
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if !firing[r.Alert] {
				t.Errorf("alert %s has no promtool test in which it fires", r.Alert)
			}
			for _, a := range []string{"summary", "description", "command"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
		}
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Every PromQL expression of the rules and the dashboard parses with
// Prometheus's own parser and uses only what flanneld registers; a renamed
// metric fails the check.
func TestMonitoringQueries(t *testing.T) {
	check := promqlcheck(t)
	if out, err := check(rulesFile, dashboardFile); err != nil {
		t.Fatalf("%v\n%s", err, out)
	} else {
		t.Logf("%s", out)
	}
	renamed := filepath.Join(t.TempDir(), "renamed.rules.yaml")
	b, _ := os.ReadFile(rulesFile)
	os.WriteFile(renamed, []byte(strings.Replace(string(b), "flannel_ready == 0", "flannel_node_ready == 0", 1)), 0o644)
	if out, err := check(renamed); err == nil || !strings.Contains(string(out), `metric "flannel_node_ready" is not one flanneld registers`) {
		t.Errorf("a rule on a metric flanneld does not register passed the check: %v\n%s", err, out)
	}
}

// promqlcheck builds scripts/promqlcheck (a module of its own) and returns
// a function running it with the catalog of flanneld's metrics.
func promqlcheck(t *testing.T) func(files ...string) ([]byte, error) {
	ms, err := catalog.Served()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cat := filepath.Join(dir, "metrics.json")
	b, _ := json.Marshal(ms)
	if err := os.WriteFile(cat, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "promqlcheck")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = "../scripts/promqlcheck"
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build scripts/promqlcheck: %v\n%s", err, out)
	}
	return func(files ...string) ([]byte, error) {
		return exec.Command(bin, append([]string{"-catalog", cat}, files...)...).CombinedOutput()
	}
}

// With the monitoring values on, the chart renders the scrape objects on
// the port named metrics, the alert rules exactly as the rules file, and
// the dashboard ConfigMap with the sidecar label; with them off (the
// default) none of it.
func TestChartMonitoring(t *testing.T) {
	bin := helmBinary(t)
	objs := renderChart(t, bin, "metrics.port=9101", "metrics.annotations=true", "metrics.podMonitor.enabled=true",
		"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true", "metrics.dashboard.enabled=true")
	ds := daemonSet(t, objs)
	c := ds.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--metrics-address=$(POD_IP):9101") || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == 9101 }) {
		t.Errorf("metrics.port=9101: args %v, ports %+v", c.Args, c.Ports)
	}
	if a := ds.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9101" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v", a)
	}
	for _, k := range []struct{ kind, name, want string }{
		{"PodMonitor", "kube-flannel", "port: metrics"}, {"ServiceMonitor", "kube-flannel", "port: metrics"},
		{"Service", "kube-flannel-metrics", "targetPort: metrics"},
	} {
		if o := find(t, objs, k.kind, k.name); !strings.Contains(string(o.raw), k.want) || !strings.Contains(string(o.raw), "honorLabels: true") && k.kind != "Service" {
			t.Errorf("%s %s lacks %q or honorLabels:\n%s", k.kind, k.name, k.want, o.raw)
		}
	}
	var rule struct {
		Spec any `json:"spec"`
	}
	decodeLoose(t, find(t, objs, "PrometheusRule", "kube-flannel").raw, &rule)
	var file any
	readYAML(t, rulesFile, &file)
	if !reflect.DeepEqual(rule.Spec, file) {
		t.Errorf("the PrometheusRule's spec is not %s", rulesFile)
	}
	cm := find(t, objs, "ConfigMap", "kube-flannel-dashboard")
	dash, _ := os.ReadFile(dashboardFile)
	if got := configData(t, cm, "flannel-dashboard.json"); strings.TrimSpace(string(got)) != strings.TrimSpace(string(dash)) {
		t.Errorf("the dashboard ConfigMap does not hold %s", dashboardFile)
	}
	if !strings.Contains(string(cm.raw), `grafana_dashboard: "1"`) {
		t.Errorf("the dashboard ConfigMap lacks the sidecar label:\n%.300s", cm.raw)
	}
	for _, o := range renderChart(t, bin) {
		if slices.Contains([]string{"PodMonitor", "ServiceMonitor", "PrometheusRule"}, o.kind()) || o.meta("name") == "kube-flannel-dashboard" {
			t.Errorf("rendered %s %s with the monitoring values off", o.kind(), o.meta("name"))
		}
	}
}

func decodeLoose(t *testing.T, raw []byte, into any) {
	t.Helper()
	if err := yaml.Unmarshal(raw, into); err != nil {
		t.Fatal(err)
	}
}
