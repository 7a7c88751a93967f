package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flannelgo/flannel/internal/version"
)

// clusterMetrics are the facts a dashboard and the alert rules need beyond
// the node's own health: what runs where, how full the subnet pool is and
// how long a peer's lease takes to reach the kernel.
type clusterMetrics struct {
	BuildInfo    *prometheus.GaugeVec
	PoolUsed     prometheus.Gauge
	PoolCapacity prometheus.Gauge
	LeaseApply   prometheus.Histogram
}

func newClusterMetrics() clusterMetrics {
	return clusterMetrics{
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_build_info",
			Help: "Always 1: the flanneld version and the backend type this node runs."}, []string{"version", "backend"}),
		PoolUsed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_subnet_pool_used",
			Help: "IPv4 subnets of the network leased by some node (this one included), as this node's lease watch sees them."}),
		PoolCapacity: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_subnet_pool_capacity",
			Help: "IPv4 subnets of SubnetLen between SubnetMin and SubnetMax: how many nodes the network can hold."}),
		// From 1 ms to about 16 s: a few ms is normal, seconds mean a
		// netlink or datastore back-log (docs/SCALE.md measures it from outside).
		LeaseApply: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flannel_lease_event_apply_duration_seconds",
			Help:    "Time from a batch of other nodes' lease events arriving from the datastore watch to its routes, neighbours and FDB entries being programmed in the kernel.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
	}
}

func (c clusterMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.BuildInfo, c.PoolUsed, c.PoolCapacity, c.LeaseApply}
}

// SetBuildInfo records the version of this binary and the backend it runs.
func (m *Metrics) SetBuildInfo(backend string) {
	m.BuildInfo.Reset()
	m.BuildInfo.WithLabelValues(version.Version, backend).Set(1)
}
