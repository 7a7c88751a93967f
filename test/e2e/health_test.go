package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// /healthz, /readyz and /metrics answer on --healthz-ip:--healthz-port;
// readiness comes once rules and subnet.env are in place.
func TestHealthEndpoints(t *testing.T) {
	c := newCluster(t, "hlz", clusterOpts{nodes: 1})
	n := c.Nodes[0]
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, n.NS, network, addr)
		},
	}}
	base := fmt.Sprintf("http://%s", net.JoinHostPort(n.Addr.String(), "10244"))
	// /readyz is polled from flanneld's start, not after subnet.env is
	// there: the first "ready" must find subnet.env already written.
	if err := c.StartFlanneld(testCtx(t, time.Minute), n, "--healthz-ip="+n.Addr.String(), "--healthz-port=10244"); err != nil {
		t.Fatal(err)
	}
	notReady := 0
	eventually(t, time.Minute, "/readyz says ready", func() error {
		if _, err := get(client, base+"/readyz"); err != nil {
			if strings.Contains(err.Error(), "503") {
				notReady++
			}
			return err
		}
		if _, err := subnetenv.Read(n.SubnetFile); err != nil {
			t.Fatalf("/readyz said ready while subnet.env was not in place: %v", err)
		}
		return nil
	})
	t.Logf("/readyz answered not ready %d times before ready", notReady)
	if _, err := get(client, base+"/healthz"); err != nil {
		t.Error(err)
	}
	body, err := get(client, base+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"flannel_ready 1", "flannel_peers 0"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), err
}
