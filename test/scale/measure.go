package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

const vxlanDev = "flannel.1"

var readyLine = regexp.MustCompile(`ready: (\d+) peers programmed`)

// converge starts flanneld on n and returns how long it took until it
// logged ready with want peers and the kernel holds want routes and FDB
// entries on flannel.1. It polls the log file, which costs flanneld
// nothing, and lists the kernel state only once ready is logged; with
// kernelReady (upstream logs no such line) it lists the kernel state from
// the start, every 100 ms.
func converge(ctx context.Context, tb *testbed.Testbed, n *testbed.Node, env []string, args []string, want int, kernelReady bool) (time.Duration, error) {
	off := fileSize(n.LogFile)
	start := time.Now()
	if err := tb.StartFlanneldEnv(ctx, n, env, args...); err != nil {
		return 0, err
	}
	p := tb.Flanneld(n)
	poll := 20 * time.Millisecond
	if kernelReady {
		poll = 100 * time.Millisecond
	}
	for !kernelReady {
		if m := readyLine.FindStringSubmatch(logSince(n.LogFile, off)); m != nil {
			if got, _ := strconv.Atoi(m[1]); got != want {
				return 0, fmt.Errorf("flanneld became ready with %s peers, want %d (log %s)", m[1], want, n.LogFile)
			}
			break
		}
		if !p.Running() {
			return 0, fmt.Errorf("flanneld exited (%v) before ready; see %s", p.Wait(), n.LogFile)
		}
		if err := pause(ctx, 5*time.Millisecond); err != nil {
			return 0, fmt.Errorf("flanneld not ready after %s: %w; see %s", time.Since(start), err, n.LogFile)
		}
	}
	// Convergence is taken when the kernel state was last seen incomplete
	// or, for ours, when the ready line was seen (flanneld logs it after
	// programming the last peer): not after the dump that confirms it,
	// which at 10000 peers takes about 0.1 s of its own.
	seen := time.Since(start)
	for {
		routes, fdb, err := kernelPeers(n.NS)
		if err != nil {
			return 0, err
		}
		if routes == want && fdb == want {
			return seen, nil
		}
		seen = time.Since(start)
		if !p.Running() {
			return 0, fmt.Errorf("flanneld exited (%v) with %d routes programmed; see %s", p.Wait(), routes, n.LogFile)
		}
		if err := pause(ctx, poll); err != nil {
			return 0, fmt.Errorf("kernel holds %d routes and %d FDB entries on %s, want %d: %w", routes, fdb, vxlanDev, want, err)
		}
	}
}

func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince is the log from byte off on.
func logSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

// kernelPeers counts the peer routes (via flannel.1, not the device's own
// host route) and permanent FDB entries on flannel.1 in namespace ns.
func kernelPeers(ns string) (routes, fdb int, err error) {
	err = testbed.WithHandle(ns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(vxlanDev)
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil // not created yet: no peers
		}
		if err != nil {
			return fmt.Errorf("%s in %s: %w", vxlanDev, ns, err)
		}
		rs, err := h.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Gw != nil {
				routes++
			}
		}
		neighs, err := h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, ne := range neighs {
			if ne.State&netlink.NUD_PERMANENT != 0 && ne.IP != nil && !ne.IP.IsUnspecified() {
				fdb++
			}
		}
		return nil
	})
	return routes, fdb, err
}

// deleteDevice removes flannel.1 and with it every route, neighbour and
// FDB entry of the previous run, so each run starts from a clean kernel.
func deleteDevice(ns string) error {
	return testbed.WithHandle(ns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(vxlanDev)
		if err != nil {
			return nil // not there
		}
		return h.LinkDel(link)
	})
}

// mem is flanneld's memory from /proc/<pid>/status, in KiB.
type mem struct {
	rss, hwm   int64 // VmRSS, VmHWM
	anon, file int64 // RssAnon, RssFile: heap and stacks; the binary's pages
}

// memory reads pid's memory figures.
func memory(pid int) (m mem, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	fields := map[string]*int64{"VmRSS": &m.rss, "VmHWM": &m.hwm, "RssAnon": &m.anon, "RssFile": &m.file}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if dst, ok := fields[k]; ok {
			*dst, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	klog.V(1).Infof("flanneld pid %d: VmRSS %d kB, VmHWM %d kB, RssAnon %d kB, RssFile %d kB", pid, m.rss, m.hwm, m.anon, m.file)
	return m, nil
}

// routeWatch reports routes added in a namespace, as the kernel announces
// them.
type routeWatch struct {
	updates chan netlink.RouteUpdate
	done    chan struct{}
}

func watchRoutes(ns string) (*routeWatch, error) {
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	w := &routeWatch{updates: make(chan netlink.RouteUpdate, 4096), done: make(chan struct{})}
	if err := netlink.RouteSubscribeWithOptions(w.updates, w.done, netlink.RouteSubscribeOptions{Namespace: &nsh}); err != nil {
		return nil, fmt.Errorf("watch routes in %s: %w", ns, err)
	}
	return w, nil
}

func (w *routeWatch) close() { close(w.done) }

// await returns when a route to dst is added, or fails after within.
func (w *routeWatch) await(ctx context.Context, dst netip.Prefix, within time.Duration) error {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case u, ok := <-w.updates:
			if !ok {
				return fmt.Errorf("route watch closed")
			}
			if u.Type != unix.RTM_NEWROUTE || u.Dst == nil {
				continue
			}
			ones, _ := u.Dst.Mask.Size()
			if a, ok := netip.AddrFromSlice(u.Dst.IP); ok && netip.PrefixFrom(a.Unmap(), ones) == dst {
				return nil
			}
		case <-timer.C:
			return fmt.Errorf("no route to %s within %s", dst, within)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// latencies puts samples new leases one by one with put(i) and times each
// until its route appears. skip is an index not to use (the node's own).
func latencies(ctx context.Context, ns string, first, samples, skip int, put func(i int) error) (p50, p99 time.Duration, err error) {
	w, err := watchRoutes(ns)
	if err != nil {
		return 0, 0, err
	}
	defer w.close()
	var ds []time.Duration
	for i := first; len(ds) < samples; i++ {
		if i == skip {
			continue
		}
		start := time.Now()
		if err := put(i); err != nil {
			return 0, 0, err
		}
		if err := w.await(ctx, subnetAt(i), 10*time.Second); err != nil {
			return 0, 0, fmt.Errorf("lease %d: %w", i, err)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return percentile(ds, 50), percentile(ds, 99), nil
}

// percentile is the nearest-rank percentile of sorted ds.
func percentile(ds []time.Duration, p int) time.Duration {
	i := (len(ds)*p + 99) / 100
	return ds[max(i, 1)-1]
}

// ownIndex is the subnet index flanneld on n leased, or -1.
func ownIndex(n *testbed.Node) int {
	env, err := subnetenv.Read(n.SubnetFile)
	if err != nil || !env.Subnet.IsValid() {
		return -1
	}
	b := env.Subnet.Masked().Addr().As4()
	return int(b[2])<<6 | int(b[3])>>2
}

// measure records memory after convergence, runs the latency phase,
// records memory again and, with o.settle, once more after that long.
func measure(ctx context.Context, tb *testbed.Testbed, n *testbed.Node, r *row, o *options, put func(i int) error) error {
	pid := tb.Flanneld(n).Pid
	ready, err := memory(pid)
	if err != nil {
		return err
	}
	r.rss = ready.rss
	logMappings(pid)
	saveHeap(n.NS, o.heapDir, fmt.Sprintf("%s-%d-ready", r.mode, r.n))
	if r.p50, r.p99, err = latencies(ctx, n.NS, r.n+1, o.samples, ownIndex(n), put); err != nil {
		return err
	}
	after, err := memory(pid)
	if err != nil {
		return err
	}
	r.rssAfter, r.last = after.rss, after
	saveHeap(n.NS, o.heapDir, fmt.Sprintf("%s-%d-after", r.mode, r.n))
	if o.settle > 0 {
		cpu0 := cpuTime(pid)
		if err := pause(ctx, o.settle); err != nil {
			return err
		}
		if r.last, err = memory(pid); err != nil {
			return err
		}
		r.settleCPU = float64(cpuTime(pid)-cpu0) / float64(o.settle)
		saveHeap(n.NS, o.heapDir, fmt.Sprintf("%s-%d-settled", r.mode, r.n))
	}
	return nil
}

// cpuTime is the CPU time pid has used (user and system), or 0.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th, in clock ticks of 1/100 s.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// pprofAddr is where flanneld serves its profiles with -heap, inside the
// node's namespace.
const pprofAddr = "127.0.0.1:6061"

// saveHeap writes flanneld's heap profile (after a GC) and its goroutine
// count into dir as name.heap / name.goroutines; a failure is only logged.
func saveHeap(ns, dir, name string) {
	if dir == "" {
		return
	}
	for _, f := range []struct{ path, file string }{
		{"/debug/pprof/heap?gc=1", name + ".heap"},
		{"/debug/pprof/goroutine?debug=1", name + ".goroutines"},
		{"/debug/pprof/heap?debug=1", name + ".memstats"}, // ends with runtime.MemStats
	} {
		body, err := getIn(ns, "http://"+pprofAddr+f.path)
		if err == nil {
			_ = os.MkdirAll(dir, 0o755)
			err = os.WriteFile(filepath.Join(dir, f.file), body, 0o644)
		}
		if err != nil {
			klog.Errorf("save %s: %v", f.file, err)
		}
	}
}

// logMappings logs the resident size of each of flanneld's larger mappings
// (-v=2), to tell the binary's pages from the heap's.
func logMappings(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return
	}
	var head string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			head = line
			continue
		}
		if len(f) == 3 && f[0] == "Rss:" {
			if kb, _ := strconv.Atoi(f[1]); kb >= 512 {
				klog.V(2).Infof("smaps: %6d kB %s", kb, head)
			}
		}
	}
}

// getIn fetches url from inside namespace ns: the connection is dialled
// there (http.Transport would dial on another thread, outside it).
func getIn(ns, url string) ([]byte, error) {
	var conn net.Conn
	if err := testbed.InNamespace(ns, func() (err error) { conn, err = net.Dial("tcp", pprofAddr); return err }); err != nil {
		return nil, err
	}
	used := false
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		if used {
			return nil, fmt.Errorf("one connection only")
		}
		used = true
		return conn, nil
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
