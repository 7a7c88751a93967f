package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
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
	rounds := 0
	for b.Loop() { // b.Loop, not b.N: the cluster is set up once, not once per probe run
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
		rounds++
	}
	underlay /= float64(rounds)
	overlay /= float64(rounds)
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

// overlayBackends are the rows of BenchmarkOverlayThroughput: each is a
// two-node cluster of its own, measured one after the other in one run.
var overlayBackends = []struct{ name, config string }{
	{"vxlan", defaultConfig},
	{"udp", udpConfig},
	{"wireguard-userspace", `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Implementation":"userspace"}}`},
	// userspace ESP (charon's kernel-libipsec) where the kernel lacks ESP
	{"ipsec", `{"Network":"10.244.0.0/16","Backend":{"Type":"ipsec","PSK":"` + strings.Repeat("bench-psk-", 10) + `"}}`},
}

// upstreamBackends are extra rows of BenchmarkOverlayThroughput when
// $FLANNEL_UPSTREAM_FLANNELD names an upstream flanneld binary: both nodes
// of these clusters run it, so ours and upstream's are measured side by
// side in one run.
var upstreamBackends = []struct{ name, config string }{
	{"upstream-udp", udpConfig},
	{"upstream-vxlan", defaultConfig},
}

// benchRow is one measured path of BenchmarkOverlayThroughput.
type benchRow struct {
	name string
	c    *cluster
	pods []*testbed.Pod
	bps  float64
}

// BenchmarkOverlayThroughput measures pod-to-pod iperf3 throughput for each
// overlay backend and node-to-node throughput over the bare underlay, in
// one run, and prints each backend's figure as a ratio of VXLAN's and of
// the underlay's. Every backend has its two-node cluster up for the whole
// run and the measurements take turns, round after round, so that a change
// in the machine's load falls on all of them alike. Set BENCH_BACKENDS
// (comma-separated names) to measure fewer than all; vxlan is always
// measured. With $FLANNEL_UPSTREAM_FLANNELD set, upstream's udp and vxlan
// are measured too, and ours is printed as a ratio of upstream's. Not part
// of CI; run it with scripts/bench.sh.
func BenchmarkOverlayThroughput(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (scripts/setup.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rows := benchRows(ctx, b)
	var underlay float64
	rounds := 0
	// b.Loop, not b.N: with b.N the testing package would first call this
	// function for one round, setting every cluster up twice.
	for b.Loop() {
		vx := rows[0].c
		u, err := iperf(ctx, vx.Testbed, vx.Nodes[0].NS, vx.Nodes[1].NS, vx.Nodes[1].Addr)
		if err != nil {
			b.Fatal(err)
		}
		underlay += u
		for _, r := range rows {
			o, err := iperf(ctx, r.c.Testbed, r.pods[0].NS, r.pods[1].NS, r.pods[1].IP)
			if err != nil {
				b.Fatalf("%s: %v", r.name, err)
			}
			r.bps += o
		}
		rounds++
	}
	underlay /= float64(rounds)
	for _, r := range rows {
		r.bps /= float64(rounds)
	}
	fmt.Printf("%-30s %8s %8s %10s\n", "path", "Gbit/s", "/vxlan", "/underlay")
	fmt.Printf("%-30s %8.2f %8s %10.3f\n", "underlay (node-node)", underlay/1e9, "", 1.0)
	byName := map[string]*benchRow{}
	for _, r := range rows {
		byName[r.name] = r
		fmt.Printf("%-30s %8.2f %8.3f %10.3f\n", r.name+" (pod-pod)", r.bps/1e9, r.bps/rows[0].bps, r.bps/underlay)
		b.ReportMetric(r.bps/rows[0].bps, r.name+"/vxlan")
	}
	for _, r := range rows {
		if up := byName["upstream-"+r.name]; up != nil {
			fmt.Printf("ours-%s / upstream-%s: %.3f\n", r.name, r.name, r.bps/up.bps)
			b.ReportMetric(r.bps/up.bps, "ours-"+r.name+"/upstream-"+r.name)
		}
	}
}

// benchRows starts a two-node cluster per measured backend, vxlan first,
// and waits until its pods reach each other.
func benchRows(ctx context.Context, b *testing.B) []*benchRow {
	type bcase struct{ name, short, config, bin string }
	var cases []bcase
	only := os.Getenv("BENCH_BACKENDS")
	for _, be := range overlayBackends {
		if only == "" || be.name == "vxlan" || slices.Contains(strings.Split(only, ","), be.name) {
			cases = append(cases, bcase{be.name, "bo" + be.name[:2], be.config, ""})
		}
	}
	if up := os.Getenv("FLANNEL_UPSTREAM_FLANNELD"); up != "" {
		for _, be := range upstreamBackends {
			cases = append(cases, bcase{be.name, "bu" + be.name[len("upstream-"):][:2], be.config, up})
		}
	}
	var rows []*benchRow
	for _, be := range cases {
		c := newCluster(b, be.short, clusterOpts{nodes: 2, config: be.config})
		for _, n := range c.Nodes {
			n.FlanneldPath = be.bin
		}
		c.start(c.Nodes)
		pods := c.addPods(c.Nodes)
		// A one-off iperf3 server is spent by a connection that a tunnel
		// still being keyed (ipsec, wireguard) drops: wait for the path.
		if err := testbed.PingWithin(ctx, pods[0].NS, pods[1].IP, 56, false, 30*time.Second); err != nil {
			b.Fatalf("%s: pods do not reach each other: %v", be.name, err)
		}
		rows = append(rows, &benchRow{name: be.name, c: c, pods: pods})
	}
	return rows
}
