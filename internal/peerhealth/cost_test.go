package peerhealth

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/probe"
)

// TestProberCost runs the real prober with real ICMP probes against 1000
// peers that answer (a namespace where all of 10.244.0.0/16 is local),
// checks that every peer is probed at the configured rate and found
// reachable, and reports the CPU the prober used per probe and per second.
func TestProberCost(t *testing.T) {
	tbtest.NeedRoot(t, "ip")
	ns := tbtest.NS(t, fmt.Sprintf("fl-phc-%d", os.Getpid()))
	// Every address of the pod network is local here, so every peer answers.
	if out, err := exec.Command("ip", "-n", ns, "route", "add", "local", "10.244.0.0/16", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("route the pod network to lo in %s: %v\n%s", ns, err, out)
	}
	var pinger *probe.Pinger
	if err := testbed.InNamespace(ns, func() (err error) { pinger, err = probe.NewPinger(); return err }); err != nil {
		t.Fatal(err)
	}
	defer pinger.Close()

	const peers, interval, measure = 1000, time.Second, 4 * time.Second
	m := NewMetrics(prometheus.NewRegistry())
	p := New(interval, pinger, m, "UDP 8472 (VXLAN)")
	p.maxRate = 0 // the cost of 1000 probes a second
	var evs []lease.Event
	for i := range peers {
		evs = append(evs, lease.Event{Type: lease.Added, Lease: lease.Lease{
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i / 4), byte(i % 4 * 64)}), 26),
			Attrs:  lease.Attrs{PublicIP: netip.AddrFrom4([4]byte{198, 51, 100, byte(i%250 + 1)}), BackendType: "vxlan"}}})
	}
	p.Update(evs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	time.Sleep(interval) // every peer probed once: steady state from here
	user0, _ := cpuSplit(t)
	cpu0, sent0 := cpuTime(t), testutil.ToFloat64(m.Probes.WithLabelValues("reply"))+testutil.ToFloat64(m.Probes.WithLabelValues("lost"))
	start := time.Now()
	time.Sleep(measure)
	elapsed := time.Since(start)
	cpu := cpuTime(t) - cpu0
	user1, _ := cpuSplit(t)
	user := user1 - user0
	replies, lost := testutil.ToFloat64(m.Probes.WithLabelValues("reply")), testutil.ToFloat64(m.Probes.WithLabelValues("lost"))
	pps := (replies + lost - sent0) / elapsed.Seconds()
	perProbe := cpu / time.Duration(replies+lost-sent0)
	t.Logf("%d peers at %s: %.0f probes/s, CPU %s (user %s, kernel incl. the local replies %s) in %s (%.1f %% of one core), %s per probe; at the default 10 s: %.0f probes/s, %.2f %% of one core",
		peers, interval, pps, cpu.Round(time.Millisecond), user.Round(time.Millisecond), (cpu - user).Round(time.Millisecond), elapsed.Round(time.Millisecond), 100*cpu.Seconds()/elapsed.Seconds(),
		perProbe.Round(time.Microsecond), pps/10, 100*cpu.Seconds()/elapsed.Seconds()/10)
	if pps < 0.85*peers || pps > 1.15*peers {
		t.Errorf("%.0f probes/s for %d peers at %s, want about %d", pps, peers, interval, peers)
	}
	if lost > 0 {
		t.Errorf("%v of %v probes lost to local addresses", lost, replies+lost)
	}
	if n := testutil.CollectAndCount(m.Reachable); n != 0 {
		t.Errorf("%d flannel_peer_reachable series, want none: every peer answered", n)
	}
	if got := testutil.ToFloat64(m.Probed); got != peers {
		t.Errorf("flannel_peers_probed %v, want %d", got, peers)
	}
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func cpuSplit(t *testing.T) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}
