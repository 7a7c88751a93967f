package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// hostile is the shared 3-node cluster of TestHostileDatastore.
type hostile struct {
	*cluster
	t    *testing.T
	cli  *clientv3.Client
	pods []*testbed.Pod
	subs map[*testbed.Node]netip.Prefix // each node's subnet
	used map[netip.Prefix]bool          // subnets spare has handed out
}

// spare returns a /24 of the pod network that no node holds and no earlier
// call returned, counting down from 10.244.254.0/24: nodes pick their
// subnets at random, and a hostile key must not hit a real node's lease.
func (h *hostile) spare() netip.Prefix {
	held := map[netip.Prefix]bool{}
	for _, s := range h.subs {
		held[s] = true
	}
	if h.used == nil {
		h.used = map[netip.Prefix]bool{}
	}
	for i := 254; i > 0; i-- {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
		if !held[p] && !h.used[p] {
			h.used[p] = true
			return p
		}
	}
	panic("no spare subnet")
}

// keyName is a subnet's etcd key name ("10.244.1.0-24").
func keyName(p netip.Prefix) string { return lease.MakeKey(p, netip.Prefix{}) }

func subnetKey(p netip.Prefix) string {
	return testbed.DefaultEtcdPrefix + "/subnets/" + lease.MakeKey(p, netip.Prefix{})
}

func vxlanValue(publicIP, mac string) string {
	return fmt.Sprintf(`{"PublicIP":%q,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`, publicIP, mac)
}

func (h *hostile) put(t *testing.T, key, value string) {
	t.Helper()
	if _, err := h.cli.Put(testCtx(t, 10*time.Second), key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (h *hostile) del(t *testing.T, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, err := h.cli.Delete(testCtx(t, 10*time.Second), k); err != nil {
			t.Fatalf("delete %s: %v", k, err)
		}
	}
}

// matrix pings every pod pair on different nodes.
func (h *hostile) matrix(t *testing.T) {
	t.Helper()
	if n := allPairsPing(t, h.pods); n != 6 {
		t.Fatalf("checked %d pod pairs, want 6", n)
	}
}

// peersProgrammed requires route, neighbour and FDB entry on every node for
// every other node.
func (h *hostile) peersProgrammed(t *testing.T) {
	t.Helper()
	for _, n := range h.Nodes {
		for _, m := range h.Nodes {
			if m != n {
				requireProgrammed(t, []*testbed.Node{n}, h.subs[m], m.Addr)
			}
		}
	}
}

// waitLogs waits until every given node's log has a line containing all of
// want, and returns those lines.
func waitLogs(t *testing.T, nodes []*testbed.Node, within time.Duration, want ...string) map[*testbed.Node][]string {
	t.Helper()
	out := map[*testbed.Node][]string{}
	for _, n := range nodes {
		eventually(t, within, fmt.Sprintf("%s logs %q", n.Name, want), func() error {
			out[n] = logLines(n, want...)
			if len(out[n]) == 0 {
				return fmt.Errorf("no such line in %s", n.LogFile)
			}
			return nil
		})
	}
	return out
}

// logLines returns the lines of n's log containing all of want.
func logLines(n *testbed.Node, want ...string) []string {
	b, _ := os.ReadFile(n.LogFile)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// rssKiB is a process's resident set size.
func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// fdbDsts lists the remote addresses of flannel.1's FDB entries
// (kernelstate).
func fdbDsts(ns string) (map[netip.Addr]bool, error) {
	out := map[netip.Addr]bool{}
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		dev, err := k.Device("flannel.1")
		if err != nil {
			return err
		}
		fdb, err := k.FDB(dev.Index)
		for _, f := range fdb {
			out[f.Dst.Unmap()] = true
		}
		return err
	})
	return out, err
}

// routesTo lists the node's main-table IPv4 routes for exactly dst, in ip
// syntax with the device name (kernelstate).
func routesTo(ns string, dst netip.Prefix) ([]string, error) {
	var out []string
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		routes, err := k.Routes("", unix.AF_INET)
		for _, r := range routes {
			if r.Dst == dst {
				out = append(out, r.String())
			}
		}
		return err
	})
	return out, err
}

// readyz fetches /readyz on the node's metrics port.
func readyz(ctx context.Context, n *testbed.Node) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, n.NS, network, addr)
		},
	}}
	return get(hc, fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort))
}

// atLeast waits until a counter on n reaches want.
func atLeast(t *testing.T, n *testbed.Node, name string, want float64) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("%s on %s >= %v", name, n.Name, want), func() error {
		v, err := metric(testCtx(t, 10*time.Second), n, name)
		if err != nil {
			return err
		}
		if v < want {
			return fmt.Errorf("%s = %v", name, v)
		}
		return nil
	})
}

// pollUntil checks cond every 10 ms until it holds; it returns how long
// that took, for figures finer than eventually's 100 ms steps.
func pollUntil(within time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > within {
			return 0, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
