package antispoof

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// Collector exports the kernel's per-port drop counters by pod: the kernel
// keeps the count, so nothing is lost between scrapes or across a
// flanneld restart.
type Collector struct {
	ctl  *Controller
	desc *prometheus.Desc
}

// NewCollector reads c's table at each scrape.
func NewCollector(c *Controller) *Collector {
	return &Collector{ctl: c, desc: prometheus.NewDesc("flannel_spoofed_packets_dropped_total",
		"Frames dropped because a pod sent them from an address (or MAC) that is not its own, per pod of this node; namespace and pod are empty for bridge ports of no known pod.",
		[]string{"namespace", "pod"}, nil)}
}

// Describe implements prometheus.Collector.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

// Collect implements prometheus.Collector.
func (m *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	drops, err := m.ctl.table.Drops(ctx)
	if err != nil {
		klog.Errorf("anti-spoofing metrics: %v", err)
		return
	}
	type pod struct{ ns, name string }
	sums := map[pod]uint64{}
	for port, n := range drops {
		ns, name := m.ctl.podOf(port)
		sums[pod{ns, name}] += n
	}
	for p, n := range sums {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(n), p.ns, p.name)
	}
}
