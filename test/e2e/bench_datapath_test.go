package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// datapathRows are the rows of BenchmarkDatapath: host-gw and vxlan on the
// kernel path and on the eBPF fast path, all with --ip-masq as on a real
// node (see benchMasq).
var datapathRows = []struct{ name, short, config, bin string }{
	{"host-gw", "bdhg", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, ""},
	{"host-gw+ebpf", "bdhge", ebpfConfig("host-gw"), ""},
	{"vxlan", "bdvx", defaultConfig, ""},
	{"vxlan+ebpf", "bdvxe", ebpfConfig("vxlan"), ""},
}

// BenchmarkDatapath measures, in one run, pod-to-pod iperf3 throughput and
// TCP request/response rate (one byte each way, one connection) for each
// row and node-to-node over the bare underlay, and prints each as a ratio
// of the underlay's and the fast path's as a ratio of the kernel path's.
// Every row has its two-node cluster up for the whole run and the rows
// take turns, in a rotating order, round after round, so that the
// machine's load falls on all alike. With $FLANNEL_UPSTREAM_FLANNELD set,
// upstream flanneld's host-gw and vxlan (kernel path) are rows too: the
// parity of the kernel paths, measured alternately. Not part of CI; run it
// with scripts/bench.sh.
func BenchmarkDatapath(b *testing.B) {
	if _, err := os.Stat("/usr/bin/iperf3"); err != nil {
		b.Skip("needs iperf3 (scripts/setup.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	rows := datapathBenchRows(ctx, b)
	under := &benchRow{name: "underlay"}
	rr := map[*benchRow]float64{}
	rounds := 0
	for b.Loop() {
		order := append([]*benchRow{under}, rows...)
		k := rounds % len(order)
		order = append(order[k:], order[:k]...)
		for _, r := range order {
			from, to, addr := benchEnds(rows[0], r)
			bps, err := iperf(ctx, nil, from, to, addr)
			if err != nil {
				b.Fatalf("%s: %v", r.name, err)
			}
			r.bps += bps
			tps, err := requestResponse(from, to, addr, 3*time.Second)
			if err != nil {
				b.Fatalf("%s: request/response: %v", r.name, err)
			}
			rr[r] += tps
		}
		rounds++
	}
	printDatapathBench(b, under, rows, rr, rounds)
}

// benchEnds are the namespaces and the address a row is measured between:
// pod to pod, or for the underlay node to node (of the first row's cluster).
func benchEnds(first, r *benchRow) (from, to string, addr netip.Addr) {
	if r.c == nil {
		n := first.c.Nodes
		return n[0].NS, n[1].NS, n[1].Addr
	}
	return r.pods[0].NS, r.pods[1].NS, r.pods[1].IP
}

func datapathBenchRows(ctx context.Context, b *testing.B) []*benchRow {
	cases := slices.Clone(datapathRows)
	if up := os.Getenv("FLANNEL_UPSTREAM_FLANNELD"); up != "" {
		cases = append(cases,
			struct{ name, short, config, bin string }{"upstream-host-gw", "bduhg", datapathRows[0].config, up},
			struct{ name, short, config, bin string }{"upstream-vxlan", "bduvx", defaultConfig, up})
	}
	var rows []*benchRow
	for _, be := range cases {
		c := newCluster(b, be.short, clusterOpts{nodes: 2, config: be.config})
		for _, n := range c.Nodes {
			n.FlanneldPath = be.bin
		}
		c.start(c.Nodes, benchMasq()...)
		pods := c.addPods(c.Nodes)
		if err := testbed.PingWithin(ctx, pods[0].NS, pods[1].IP, 56, false, 30*time.Second); err != nil {
			b.Fatalf("%s: pods do not reach each other: %v", be.name, err)
		}
		rows = append(rows, &benchRow{name: be.name, c: c, pods: pods})
	}
	return rows
}

// benchMasq is flanneld's masquerade flag for the rows: on, as on a real
// node, unless $BENCH_IP_MASQ is "false" (pods then as a new user wires
// them by hand, the setting where the kernel paths' parity was questioned).
func benchMasq() []string {
	if os.Getenv("BENCH_IP_MASQ") == "false" {
		return nil
	}
	return []string{"--ip-masq"}
}

func printDatapathBench(b *testing.B, under *benchRow, rows []*benchRow, rr map[*benchRow]float64, rounds int) {
	n := float64(rounds)
	fmt.Printf("%d rounds; iperf3 5 s and TCP request/response 3 s per row and round; flanneld %v\n", rounds, benchMasq())
	fmt.Printf("%-22s %8s %10s %12s %10s\n", "path", "Gbit/s", "/underlay", "RR trans/s", "/underlay")
	all := append([]*benchRow{under}, rows...)
	for _, r := range all {
		fmt.Printf("%-22s %8.2f %10.3f %12.0f %10.3f\n", r.name, r.bps/n/1e9, r.bps/under.bps, rr[r]/n, rr[r]/rr[under])
		b.ReportMetric(r.bps/under.bps, r.name+"/underlay")
	}
	byName := map[string]*benchRow{}
	for _, r := range rows {
		byName[r.name] = r
	}
	for _, be := range []string{"host-gw", "vxlan"} {
		k, f := byName[be], byName[be+"+ebpf"]
		fmt.Printf("%s+ebpf / %s: throughput %.3f, request/response rate %.3f\n", be, be, f.bps/k.bps, rr[f]/rr[k])
		if up := byName["upstream-"+be]; up != nil {
			fmt.Printf("ours %s / upstream %s (kernel path): throughput %.3f, request/response rate %.3f\n", be, be, k.bps/up.bps, rr[k]/rr[up])
		}
	}
}

// requestResponse runs a one-byte request/response exchange over one TCP
// connection from namespace fromNS to a server in toNS at addr for d, and
// returns the transactions per second: a latency figure, as netperf's
// TCP_RR. Plain blocking sockets on locked threads keep the Go runtime's
// poller out of the round trip.
func requestResponse(fromNS, toNS string, addr netip.Addr, d time.Duration) (float64, error) {
	lfd, port, err := rrListen(toNS, addr)
	if err != nil {
		return 0, err
	}
	defer unix.Close(lfd)
	srvErr := make(chan error, 1)
	go func() { srvErr <- rrServe(lfd) }()
	var cfd int
	err = testbed.InNamespace(fromNS, func() error {
		var err error
		if cfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0); err != nil {
			return err
		}
		_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		return unix.Connect(cfd, &unix.SockaddrInet4{Port: port, Addr: addr.As4()})
	})
	if err != nil {
		return 0, fmt.Errorf("connect %s -> %s: %w", fromNS, addr, err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := []byte{1}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := unix.Write(cfd, buf); err != nil {
			unix.Close(cfd)
			return 0, err
		}
		if m, err := unix.Read(cfd, buf); err != nil || m != 1 {
			unix.Close(cfd)
			return 0, errors.Join(err, errors.New("short read"))
		}
		n++
	}
	took := time.Since(start)
	unix.Close(cfd)
	if err := <-srvErr; err != nil {
		return 0, err
	}
	return float64(n) / took.Seconds(), nil
}

func rrListen(ns string, addr netip.Addr) (fd, port int, err error) {
	err = testbed.InNamespace(ns, func() error {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Listen(fd, 1); err != nil {
			unix.Close(fd)
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			unix.Close(fd)
			return err
		}
		port = sa.(*unix.SockaddrInet4).Port
		return nil
	})
	return fd, port, err
}

// rrServe answers each byte of one connection until the client closes it.
func rrServe(lfd int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, _, err := unix.Accept(lfd)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	buf := []byte{0}
	for {
		n, err := unix.Read(fd, buf)
		if err != nil || n == 0 {
			return err
		}
		if _, err := unix.Write(fd, buf); err != nil {
			return err
		}
	}
}
