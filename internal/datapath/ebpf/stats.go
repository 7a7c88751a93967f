package ebpf

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// counter is one slot of the programs' stats array: a redirect (by path)
// or a fallback to the kernel path (by reason).
type counter struct {
	redirect bool
	label    string
}

// statNames are the slots in the order of enum stat in bpf/fastpath.c.
var statNames = []counter{
	{true, "local"}, {true, "remote"}, {true, "inbound"},
	{false, "protocol"}, {false, "destination"}, {false, "source"}, {false, "policy"},
	{false, "conntrack"}, {false, "route"}, {false, "mtu"},
}

// Collector exports the programs' counters. The kernel keeps them per CPU
// in a map; each scrape sums them.
type Collector struct {
	d                   *Datapath
	redirects, fallback *prometheus.Desc
}

// NewCollector reads d's counters at each scrape (d may be nil for the
// metrics catalog).
func NewCollector(d *Datapath) *Collector {
	return &Collector{
		d: d,
		redirects: prometheus.NewDesc("flannel_ebpf_redirected_packets_total",
			"Packets the eBPF fast path moved past the bridge and netfilter, by path: local (pod to pod on this node), remote (pod to the uplink), inbound (uplink to a pod).",
			[]string{"path"}, nil),
		fallback: prometheus.NewDesc("flannel_ebpf_fallback_packets_total",
			"Pod packets the eBPF fast path left to the kernel path, by reason: protocol (not IPv4 TCP/UDP), destination (outside the pod network, the host, unknown), source (not the pod's own address), policy (a policy selects the pod), conntrack (a flow the kernel tracks: NAT, Services), route (another egress device, no route, TTL), mtu (too big for the egress device).",
			[]string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.redirects
	ch <- c.fallback
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.d == nil {
		return
	}
	counts, err := c.d.objs.counters()
	if err != nil {
		klog.Errorf("eBPF fast path metrics: %v", err)
		return
	}
	for i, n := range counts {
		desc := c.fallback
		if statNames[i].redirect {
			desc = c.redirects
		}
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(n), statNames[i].label)
	}
}
