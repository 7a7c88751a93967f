package main

import (
	"context"
	"net"
	"strconv"

	"github.com/flannelgo/flannel/internal/metrics"
)

// serveHTTP starts the healthz server (--healthz-ip:--healthz-port, as
// upstream) and, with --metrics-address, a second server for /metrics and
// the drop log (and the health endpoints), so that the health port a
// kubelet probes can be open while the metrics (pod names, peer addresses)
// stay on an address only the scraper reaches.
func serveHTTP(ctx context.Context, o *options, m *metrics.Metrics) error {
	health := m.Handler()
	if o.metricsAddress != "" {
		health = m.HealthHandler()
		if err := metrics.Serve(ctx, o.metricsAddress, m.Handler(), "/metrics (--metrics-address)"); err != nil {
			return err
		}
	}
	if o.healthzPort > 0 {
		addr := net.JoinHostPort(o.healthzIP, strconv.Itoa(o.healthzPort))
		return metrics.Serve(ctx, addr, health, "healthz (--healthz-ip, --healthz-port)")
	}
	return nil
}
