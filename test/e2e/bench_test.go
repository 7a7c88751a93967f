package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/testbed"
	"github.com/flannelgo/flannel/internal/testbed/tbtest"
)

// BenchmarkVXLANThroughput measures, in one run, iperf3 TCP throughput
// pod-to-pod across two VXLAN nodes and node-to-node over the bare
// underlay, and reports their ratio: the cost of the overlay on this
// machine. Not part of CI; run it with scripts/bench.sh.
func BenchmarkVXLANThroughput(b *testing.B) {
	tbtest.NeedTools(b, "iperf3")
	c := newCluster(b, "bch", clusterOpts{nodes: 2})
	c.start(c.Nodes)
	pods := c.addPods(c.Nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var overlay, underlay float64
	for i := 0; i < b.N; i++ {
		u, err := iperf(ctx, c.Testbed, c.Nodes[0].NS, c.Nodes[1].NS, c.Nodes[1].Addr)
		if err != nil {
			b.Fatal(err)
		}
		o, err := iperf(ctx, c.Testbed, pods[0].NS, pods[1].NS, pods[1].IP)
		if err != nil {
			b.Fatal(err)
		}
		underlay += u
		overlay += o
	}
	underlay /= float64(b.N)
	overlay /= float64(b.N)
	b.ReportMetric(underlay/1e9, "underlay-Gbit/s")
	b.ReportMetric(overlay/1e9, "vxlan-Gbit/s")
	b.ReportMetric(overlay/underlay, "vxlan/underlay")
	fmt.Printf("pod-to-pod over VXLAN %.2f Gbit/s, node-to-node underlay %.2f Gbit/s, ratio %.3f\n",
		overlay/1e9, underlay/1e9, overlay/underlay)
}

// iperf runs a 5-second iperf3 TCP test from clientNS to a server in
// serverNS at addr and returns the received bits per second.
func iperf(ctx context.Context, tb *testbed.Testbed, clientNS, serverNS string, addr netip.Addr) (float64, error) {
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", serverNS, "iperf3", "-s", "-1", "-B", addr.String())
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("start iperf3 server in %s: %w", serverNS, err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var err error
	for range 50 { // until the server listens
		var bps float64
		if bps, err = iperfClient(ctx, clientNS, addr); err == nil {
			return bps, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, err
}

// iperfClient runs one 5-second iperf3 client and returns what arrived.
func iperfClient(ctx context.Context, clientNS string, addr netip.Addr) (float64, error) {
	out, err := testbed.Exec(ctx, clientNS, "iperf3", "-J", "-t", "5", "-c", addr.String())
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil && err == nil {
		err = fmt.Errorf("parse iperf3 output: %w", jerr)
	}
	if err == nil && (res.Error != "" || res.End.SumReceived.BitsPerSecond == 0) {
		err = fmt.Errorf("measured nothing: %s", res.Error)
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3 %s -> %s: %w", clientNS, addr, err)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}
