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
