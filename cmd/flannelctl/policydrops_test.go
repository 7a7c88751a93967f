package main

import (
	"bytes"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/droplog"
)

// policy drops prints flanneld's records, filtered by namespace, and says
// they are a sample at the node's rate.
func TestPolicyDrops(t *testing.T) {
	l := droplog.New("n1", nil, nil)
	l.Add(droplog.Record{Time: time.Unix(10, 0).UTC(), Node: "n1", Direction: "ingress", Proto: "TCP", Port: 80,
		Source: droplog.Endpoint{IP: netip.MustParseAddr("10.244.2.5"), Namespace: "y", Pod: "b"},
		Dest:   droplog.Endpoint{IP: netip.MustParseAddr("10.244.1.5"), Namespace: "x", Pod: "a"}, Policies: []string{"x/deny-a"}})
	l.Add(droplog.Record{Time: time.Unix(11, 0).UTC(), Direction: "egress", Proto: "UDP", Port: 53,
		Source: droplog.Endpoint{IP: netip.MustParseAddr("10.244.1.6"), Namespace: "z", Pod: "c"},
		Dest:   droplog.Endpoint{IP: netip.MustParseAddr("203.0.113.53")}})
	srv := httptest.NewServer(l.Handler(100))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out, errOut bytes.Buffer
	if code := run([]string{"policy", "drops", "--address", addr, "--namespace", "x"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := "1970-01-01T00:00:10Z n1 ingress y/b -> x/a 80/TCP policies=x/deny-a\n"
	if out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
	if !strings.Contains(errOut.String(), "sample") || !strings.Contains(errOut.String(), "100 packets per second") {
		t.Errorf("no sampling note: %q", errOut.String())
	}
	out.Reset()
	if code := run([]string{"policy", "drops", "--address", addr, "--output", "json"}, &out, &errOut); code != 0 || strings.Count(out.String(), "\n") != 2 {
		t.Errorf("json: exit %d, %q", code, out.String())
	}
	if code := run([]string{"policy", "drops", "--output", "yaml"}, &out, &errOut); code != 2 {
		t.Errorf("--output yaml: exit %d, want 2", code)
	}
}
