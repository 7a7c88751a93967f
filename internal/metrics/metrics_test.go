package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestReadiness(t *testing.T) {
	m := New()
	h := m.Handler()
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _ := get(t, h, "/readyz"); code != 503 {
		t.Fatalf("readyz before ready: %d", code)
	}
	m.Pass(CondNetwork)
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("readyz after ready: %d", code)
	}
	m.Peers.Set(3)
	_, body := get(t, h, "/metrics")
	for _, want := range []string{"flannel_ready 1", "flannel_peers 3", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// A failing condition's detail reaches /readyz; passing it clears it.
func TestNotReadyReasonAndRepairs(t *testing.T) {
	m := New()
	h := m.Handler()
	m.Pass(CondNetwork)
	m.Fail(CondLeaseWatch, "lease watch on etcd interrupted: connection refused")
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.Contains(body, "not ready: lease-watch: lease watch on etcd interrupted: connection refused") {
		t.Fatalf("readyz while deaf: %d %q", code, body)
	}
	m.Pass(CondLeaseWatch)
	if code, body := get(t, h, "/readyz"); code != 200 || m.NotReadyReason() != "" {
		t.Fatalf("readyz after recovery: %d %q, reason %q", code, body, m.NotReadyReason())
	}
	m.Repaired("route", 2)
	m.Repaired("fdb", 1)
	m.ReconcileFailed()
	_, body = get(t, h, "/metrics")
	for _, want := range []string{`flannel_reconcile_repairs_total{kind="route"} 2`, `flannel_reconcile_repairs_total{kind="fdb"} 1`, "flannel_reconcile_errors_total 1", "flannel_ready 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// Two conditions failing at once: /readyz lists both, the gauge stays 0
// until the last one passes, and each passes on its own.
func TestTwoConditions(t *testing.T) {
	m := New()
	h := m.Handler()
	m.Pass(CondNetwork)
	if !m.Fail(CondLeaseWatch, "lease watch on etcd interrupted") {
		t.Errorf("Fail of a holding condition reported it failing already")
	}
	if m.Fail(CondLeaseWatch, "lease watch on etcd interrupted: still") {
		t.Errorf("second Fail reported the condition newly failing")
	}
	m.Fail(CondConfig, "network config changed: Network 10.244.0.0/16 is now 10.245.0.0/16")
	code, body := get(t, h, "/readyz")
	want := "not ready: config: network config changed: Network 10.244.0.0/16 is now 10.245.0.0/16; lease-watch: lease watch on etcd interrupted: still\n"
	if code != 503 || body != want {
		t.Fatalf("readyz with two failing conditions: %d %q, want 503 %q", code, body, want)
	}
	gauge := func() string {
		_, body := get(t, h, "/metrics")
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "flannel_ready ") {
				return l
			}
		}
		return ""
	}
	if g := gauge(); g != "flannel_ready 0" {
		t.Errorf("gauge %q with two failing conditions", g)
	}
	if !m.Pass(CondConfig) || m.Pass(CondConfig) {
		t.Errorf("Pass did not report the config condition failing exactly once")
	}
	if code, body := get(t, h, "/readyz"); code != 503 || strings.Contains(body, "config") || !strings.Contains(body, "lease-watch") {
		t.Errorf("readyz after config passed: %d %q", code, body)
	}
	if g := gauge(); g != "flannel_ready 0" {
		t.Errorf("gauge %q with one failing condition", g)
	}
	m.Pass(CondLeaseWatch)
	if code, body := get(t, h, "/readyz"); code != 200 || body != "ok\n" || !m.IsReady() {
		t.Errorf("readyz after both passed: %d %q", code, body)
	}
	if g := gauge(); g != "flannel_ready 1" {
		t.Errorf("gauge %q with every condition holding", g)
	}
}
