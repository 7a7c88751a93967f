package netpol

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// Metrics are the network policy's Prometheus collectors.
type Metrics struct {
	SyncSeconds prometheus.Histogram
	Active      prometheus.Gauge
	drops       *dropCollector
}

// NewMetrics reads the drop counters from t at each scrape.
func NewMetrics(t *Table) *Metrics {
	return &Metrics{
		SyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flannel_policy_sync_duration_seconds",
			Help:    "Time to compile the network policies and load them into nftables.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_policy_active",
			Help: "NetworkPolicies that select at least one pod of this node."}),
		drops: &dropCollector{table: t, desc: prometheus.NewDesc("flannel_policy_dropped_packets_total",
			"Packets dropped by network policy, per pod of this node and direction.",
			[]string{"namespace", "pod", "direction"}, nil)},
	}
}

// Collectors are what to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.SyncSeconds, m.Active, m.drops}
}

func (m *Metrics) observe(took time.Duration, model *Model) {
	m.SyncSeconds.Observe(took.Seconds())
	m.Active.Set(float64(model.PolicyCount))
}

// dropCollector turns the table's named counters into samples: the kernel
// keeps the count, so nothing is lost between scrapes or across a
// flanneld restart.
type dropCollector struct {
	table *Table
	desc  *prometheus.Desc
}

func (d *dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

func (d *dropCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	drops, err := d.table.Drops(ctx)
	if err != nil {
		klog.Errorf("network policy metrics: %v", err)
		return
	}
	for _, dr := range drops {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(dr.Packets),
			dr.Namespace, dr.Pod, dr.Direction.String())
	}
}
