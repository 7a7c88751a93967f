// Command scale measures flanneld at scale (driven by scripts/scale.sh; not
// part of CI). For each N it runs the real flanneld binary (VXLAN, one node
// in a testbed namespace) against N peer leases and prints:
//
//   - convergence: flanneld started → ready with N peers and N routes and
//     FDB entries programmed on flannel.1;
//   - memory of flanneld from /proc: VmRSS right after convergence
//     (RSS@ready), VmRSS after the latency phase (RSS), and at the end
//     (after the latency phase, or -settle later: past the 30 s
//     reconcile and a round of peer probes, the steady state) VmRSS, its
//     anonymous (heap, stacks) and file-backed (the binary's pages) parts,
//     and VmHWM (the peak of the run);
//   - new-lease-to-route p50/p99: leases (etcd keys or Node objects) put one
//     by one after convergence, each timed until its route appears.
//
// In etcd mode the leases are keys under /coreos.com/network/subnets in the
// testbed's etcd; in kube mode they are realistic Node objects (50 images,
// conditions, addresses, labels) in a real kube-apiserver. The network is
// 10.244.0.0/16 cut into /30s, so 10000 peers fit in the pod range.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// netConf is the network every run uses: /30 subnets leave room for 16383
// peers inside the pod range the machine's rules allow.
const netConf = `{"Network":"10.244.0.0/16","SubnetLen":30,"Backend":{"Type":"vxlan"}}`

type options struct {
	flanneld string
	modes    []string
	sizes    []int
	samples  int
	testbed  string
	timeout  time.Duration
	keepLogs string
	args     []string
	// kernelReady: convergence is when the kernel holds every route and
	// FDB entry, without waiting for our "ready: N peers" log line, which
	// upstream flanneld does not write.
	kernelReady bool
	heapDir     string   // write flanneld's heap profiles here (our flanneld only)
	env         []string // extra environment for flanneld (GOGC=25, GOMEMLIMIT=...)
	settle      time.Duration
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	err = run(ctx, o)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags() (*options, error) {
	o := &options{}
	var modes, sizes, args, env string
	flag.StringVar(&o.flanneld, "flanneld", "", "flanneld binary to measure (required)")
	flag.StringVar(&modes, "modes", "etcd,kube", "datastores to measure, comma-separated")
	flag.StringVar(&sizes, "n", "1000,5000,10000", "numbers of peers, comma-separated, ascending")
	flag.IntVar(&o.samples, "samples", 200, "new leases put one by one after convergence, for the latency percentiles")
	flag.StringVar(&o.testbed, "testbed", "scale"+tag(), "testbed name (namespaces fl-<testbed>-*)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up (and clean up) after this long")
	flag.StringVar(&o.keepLogs, "logs", "", "copy flanneld's logs into this directory")
	flag.StringVar(&args, "args", "", "extra flanneld arguments, space-separated")
	flag.StringVar(&env, "env", "", "extra environment for flanneld, space-separated NAME=VALUE (e.g. GOGC=25)")
	flag.BoolVar(&o.kernelReady, "kernel-ready", false, "take convergence from the kernel state alone (for a flanneld that does not log \"ready: N peers programmed\", e.g. upstream's)")
	flag.StringVar(&o.heapDir, "heap", "", "write flanneld's heap profile after convergence and after the latency phase into this directory (adds --debug-pprof-address)")
	klog.InitFlags(nil)
	flag.DurationVar(&o.settle, "settle", 0, "after the latency phase, wait this long and read the memory again (the RSS@end columns)")
	flag.Parse()
	if o.flanneld == "" {
		return nil, fmt.Errorf("-flanneld is required")
	}
	o.modes = strings.Split(modes, ",")
	o.args = strings.Fields(args)
	o.env = strings.Fields(env)
	if o.heapDir != "" {
		o.args = append(o.args, "--debug-pprof-address="+pprofAddr)
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n+o.samples > maxIndex-1 {
			return nil, fmt.Errorf("-n %q: each size must be between 1 and %d", sizes, maxIndex-2-o.samples)
		}
		o.sizes = append(o.sizes, n)
	}
	return o, nil
}

// tag keeps this run's namespaces apart from other users of the machine,
// as the e2e suite does.
func tag() string {
	if t := os.Getenv("FLANNEL_E2E_TAG"); t != "" {
		return t
	}
	return "sc"
}

func run(ctx context.Context, o *options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it creates network namespaces")
	}
	state, err := os.MkdirTemp("", "flannel-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	tb, err := testbed.New(ctx, testbed.Options{Name: o.testbed, Nodes: 1, StateDir: filepath.Join(state, "testbed"), FlanneldPath: o.flanneld})
	if err != nil {
		return err
	}
	defer func() {
		if err := tb.Close(context.Background()); err != nil {
			klog.Errorf("remove testbed: %v", err)
		}
	}()
	fmt.Printf("%-5s %6s %12s %10s %10s %10s %10s %10s %10s %9s %9s %9s\n", "mode", "N", "convergence", "RSS@ready", "RSS",
		"RSS@end", "anon@end", "file@end", "HWM", "p50", "p99", "CPU@settle")
	for _, mode := range o.modes {
		var rows []row
		var err error
		switch mode {
		case "etcd":
			rows, err = runEtcd(ctx, tb, o)
		case "kube":
			rows, err = runKube(ctx, tb, o)
		default:
			err = fmt.Errorf("unknown mode %q (etcd or kube)", mode)
		}
		if o.keepLogs != "" {
			copyLog(tb.Nodes[0].LogFile, filepath.Join(o.keepLogs, "flanneld-"+mode+".log"))
		}
		if err != nil {
			return fmt.Errorf("%s mode (rows so far: %d): %w", mode, len(rows), err)
		}
	}
	return nil
}

func copyLog(from, to string) {
	b, err := os.ReadFile(from)
	if err == nil {
		_ = os.MkdirAll(filepath.Dir(to), 0o755)
		err = os.WriteFile(to, b, 0o644)
	}
	if err != nil {
		klog.Errorf("keep log: %v", err)
	}
}

// row is one line of the table.
type row struct {
	mode        string
	n           int
	convergence time.Duration
	rss         int64   // VmRSS (KiB) right after convergence
	rssAfter    int64   // VmRSS (KiB) after the latency phase: the steady state
	last        mem     // at the end: after the latency phase, or after -settle
	settleCPU   float64 // CPU share flanneld used during -settle (1 = one core)
	p50, p99    time.Duration
}

func (r row) print() {
	fmt.Printf("%-5s %6d %12s %10s %10s %10s %10s %10s %10s %9s %9s %8.2f%%\n", r.mode, r.n, r.convergence.Round(time.Millisecond),
		mib(r.rss), mib(r.rssAfter), mib(r.last.rss), mib(r.last.anon), mib(r.last.file), mib(r.last.hwm),
		r.p50.Round(100*time.Microsecond), r.p99.Round(100*time.Microsecond), 100*r.settleCPU)
}

func mib(kib int64) string { return fmt.Sprintf("%.1fMiB", float64(kib)/1024) }

// maxIndex is the number of /30 subnets in 10.244.0.0/16.
const maxIndex = 1 << 14

// subnetAt is the i-th /30 of the pod network (1 ≤ i < maxIndex).
func subnetAt(i int) netip.Prefix {
	b := [4]byte{10, 244, byte(i >> 6), byte(i&63) << 2}
	return netip.PrefixFrom(netip.AddrFrom4(b), 30)
}

// publicIPAt is peer i's underlay address. Nothing is sent to it: an FDB
// entry only records it.
func publicIPAt(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i%100)}) }

// vtepMACAt is peer i's VXLAN device address (locally administered).
func vtepMACAt(i int) string {
	return fmt.Sprintf("0e:5c:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

func backendData(i int) string { return fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, vtepMACAt(i)) }
