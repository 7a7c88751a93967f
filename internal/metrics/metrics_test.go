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
	m.SetReady(true)
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

// A reason given with SetNotReady reaches /readyz; readiness clears it.
func TestNotReadyReasonAndRepairs(t *testing.T) {
	m := New()
	h := m.Handler()
	m.SetReady(true)
	m.SetNotReady("lease watch on etcd interrupted: connection refused")
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.Contains(body, "not ready: lease watch on etcd interrupted: connection refused") {
		t.Fatalf("readyz while deaf: %d %q", code, body)
	}
	m.SetReady(true)
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
