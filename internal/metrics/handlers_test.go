package metrics

import (
	"net/http"
	"strings"
	"testing"
)

// With --metrics-address the health server answers probes only, and the
// metrics server serves everything (the health endpoints too, for
// `flannelctl doctor --healthz` at the scraped address).
func TestHandlersSplit(t *testing.T) {
	m := New()
	m.Handle("/policy/drops", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("drops")) }))
	m.SetBuildInfo("vxlan")
	health, all := m.HealthHandler(), m.Handler()
	for _, c := range []struct {
		h    http.Handler
		path string
		code int
	}{
		{health, "/healthz", 200}, {health, "/metrics", 404}, {health, "/policy/drops", 404},
		{all, "/healthz", 200}, {all, "/readyz", 503}, {all, "/metrics", 200}, {all, "/policy/drops", 200},
	} {
		if code, _ := get(t, c.h, c.path); code != c.code {
			t.Errorf("%s: %d, want %d", c.path, code, c.code)
		}
	}
	if _, body := get(t, all, "/metrics"); !strings.Contains(body, `flannel_build_info{backend="vxlan",version="`) {
		t.Errorf("no flannel_build_info in /metrics")
	}
}
