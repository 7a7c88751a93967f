package antispoof

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// BenchmarkPinningCost measures what pinning costs a pod: iperf3 TCP
// between two pods on one bridge (the shortest path, where a per-frame
// cost weighs most), with the table and without, alternating within one
// run so that the machine's load falls on both alike. Run by
// scripts/bench.sh; not part of CI.
func BenchmarkPinningCost(b *testing.B) {
	tbtest.NeedRoot(b, "ip", "nft", "iperf3")
	bd := newBed(b)
	var tbl *Table
	var on, off float64
	rounds := 0
	for b.Loop() {
		tbl = bd.sync("a", "b")
		on += bd.iperf(b)
		if err := testbed.InNamespace(bd.node, func() error { _, err := tbl.Remove(context.Background()); return err }); err != nil {
			b.Fatal(err)
		}
		off += bd.iperf(b)
		rounds++
	}
	on, off = on/float64(rounds), off/float64(rounds)
	b.ReportMetric(on/1e9, "pinned-Gbit/s")
	b.ReportMetric(off/1e9, "unpinned-Gbit/s")
	b.ReportMetric(on/off, "pinned/unpinned")
	fmt.Printf("pod-to-pod on one bridge, %d rounds: pinned %.2f Gbit/s, unpinned %.2f Gbit/s, ratio %.3f\n", rounds, on/1e9, off/1e9, on/off)
}

// iperf runs 3 s of iperf3 TCP from pod a to pod b and returns bits per
// second received.
func (bd *bed) iperf(b *testing.B) float64 {
	srv := exec.Command("ip", "netns", "exec", bd.pods["b"].ns, "iperf3", "-s", "-1", "-B", bd.pods["b"].ip4.String())
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for range 20 {
		out, err = exec.Command("ip", "netns", "exec", bd.pods["a"].ns, "iperf3", "-J", "-t", "3", "-c", bd.pods["b"].ip4.String()).Output()
		if err == nil {
			break
		}
	}
	if err != nil {
		b.Fatalf("iperf3: %v %s", err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatal(err)
	}
	return r.End.SumReceived.BitsPerSecond
}
