// Package catalog lists every metric flanneld can export, read from the
// very collectors it registers: docs/METRICS.md is generated from it, and
// the alert rules and the dashboard in deploy/ are checked against it, so
// renaming a metric fails a test until both follow.
package catalog

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/backend/udp"
	"github.com/flannelgo/flannel/internal/datapath/ebpf"
	"github.com/flannelgo/flannel/internal/droplog"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/netpol"
	"github.com/flannelgo/flannel/internal/peerhealth"
)

// Metric is one metric family.
type Metric struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Labels []string `json:"labels"`
	Help   string   `json:"help"`
	// When says when flanneld exports it (empty: always).
	When string `json:"when,omitempty"`
}

// source is a group of collectors and when flanneld registers them.
type source struct {
	when       string
	collectors []prometheus.Collector
}

func sources() []source {
	m := metrics.New()
	ph := peerhealth.NewMetrics(prometheus.NewRegistry())
	return []source{
		{"", m.Collectors()},
		{"--peer-probe-interval > 0 (the default) and a backend with peers", []prometheus.Collector{
			ph.Reachable, ph.RTT, ph.Loss, ph.Probes, ph.Probed, ph.Unreachable, ph.Troubled, ph.Unlabelled, ph.RTTs}},
		{"--network-policy", netpol.NewMetrics(nil).Collectors()},
		{"--network-policy with --policy-drop-log-group > 0 (the default)", droplog.New("", nil, nil).Collectors()},
		{"--anti-spoofing on", []prometheus.Collector{antispoof.NewCollector(nil)}},
		{"the udp backend", udp.CatalogCollectors()},
		{`"Datapath": "ebpf" in the Backend config`, []prometheus.Collector{ebpf.NewCollector(nil)}},
	}
}

// All is every flannel_* metric, by name. The Go runtime's go_* and the
// process_* metrics are left out: they are the client library's standard
// ones.
func All() ([]Metric, error) { return list(sources(), "flannel_") }

// Served is every metric /metrics serves: All and the client library's
// go_* and process_* ones, which dashboards may use too.
func Served() ([]Metric, error) {
	return list(append(sources(), source{"always (client library)", []prometheus.Collector{
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}}), "")
}

func list(srcs []source, prefix string) ([]Metric, error) {
	var out []Metric
	for _, s := range srcs {
		for _, c := range s.collectors {
			ms, err := describe(c, s.when, prefix)
			if err != nil {
				return nil, err
			}
			out = append(out, ms...)
		}
	}
	slices.SortFunc(out, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// descRE reads a Desc's String(), the only public view of its fields.
var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]*)", help: "((?:[^"\\]|\\.)*)",(?: unit: "[^"]*",)? constLabels: \{[^}]*\}, variableLabels: \{([^}]*)\}\}$`)

func describe(c prometheus.Collector, when, prefix string) ([]Metric, error) {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	var out []Metric
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			return nil, fmt.Errorf("cannot read metric description %s", d)
		}
		if !strings.HasPrefix(m[1], prefix) {
			continue
		}
		var labels []string
		if m[3] != "" {
			labels = strings.Split(m[3], ",")
		}
		help := strings.ReplaceAll(m[2], `\"`, `"`)
		out = append(out, Metric{Name: m[1], Type: kind(c, m[1]), Labels: labels, Help: help, When: when})
	}
	return out, nil
}

// kind is the metric type: from the collector's Go type, else (collectors
// of our own that read the kernel's counters) from the name.
func kind(c prometheus.Collector, name string) string {
	switch c.(type) {
	case prometheus.Histogram, *prometheus.HistogramVec:
		return "histogram"
	case prometheus.Gauge, *prometheus.GaugeVec:
		return "gauge"
	case prometheus.Counter, *prometheus.CounterVec, prometheus.CounterFunc:
		return "counter"
	}
	if strings.HasSuffix(name, "_total") {
		return "counter"
	}
	return "gauge"
}
