package tbtest

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/lease"
)

// Repairs records what a Healer reports.
type Repairs struct {
	mu       sync.Mutex
	byKind   map[string]int
	failures int
}

// Repaired implements backend.RepairReporter.
func (r *Repairs) Repaired(kind string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byKind == nil {
		r.byKind = map[string]int{}
	}
	r.byKind[kind] += n
}

// ReconcileFailed implements backend.RepairReporter.
func (r *Repairs) ReconcileFailed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
}

// Count is how many objects of kind were repaired so far.
func (r *Repairs) Count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byKind[kind]
}

// Failures is how many reconciles failed so far.
func (r *Repairs) Failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures
}

// namespaceWatcher is a backend that can be told which namespace its
// netlink handle works in.
type namespaceWatcher interface{ WatchNamespace(netns.NsHandle) }

// Heal runs nw's Healer, watching n's namespace, until the test ends, and
// returns what it reports. interval 0 means the backend default.
func Heal(t testing.TB, n *Node, be backend.Backend, nw backend.Network, interval time.Duration) *Repairs {
	t.Helper()
	h, ok := nw.(backend.Healer)
	if !ok {
		t.Fatalf("%T does not heal", nw)
	}
	nsh, err := netns.GetFromName(n.NS)
	if err != nil {
		t.Fatalf("open namespace %s: %v", n.NS, err)
	}
	if w, ok := be.(namespaceWatcher); ok {
		w.WatchNamespace(nsh)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := &Repairs{}
	go func() {
		defer close(done)
		h.Heal(ctx, backend.HealConfig{Interval: interval, Report: r})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		nsh.Close()
	})
	return r
}

// WaitFor polls cond every 5 ms until it returns nil and says how long that
// took; it fails the test when within passes first.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	return poll(t, within, 5*time.Millisecond, what, cond)
}

// TryPing is one echo of 56 bytes from ns to dst, retried until within
// passes; it returns the last failure.
func TryPing(ns string, dst netip.Addr, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within+5*time.Second)
	defer cancel()
	return testbed.PingWithin(ctx, ns, dst, 56, false, within)
}

// HealPair is two nodes on one segment with one pod each, programmed for
// each other, and a healer on A whose periodic reconcile is an hour away:
// every repair a test sees comes from a netlink notification.
type HealPair struct {
	Net      *Net
	A, B     *Node
	PA, PB   *Pod
	BeA      backend.Backend
	NwA, NwB backend.Network
	LA, LB   lease.Lease
	Rep      *Repairs
}

// NewHealPair builds a HealPair for the backend type typeName: a at
// 198.51.100.11 with 10.244.1.0/24, b at .12 with 10.244.2.0/24, and with
// dual the IPv6 twins (fd00:198:51:100::11, fd00:10:244:1::/64, ...).
// newBackend makes the backend of a node (the package's NewWithHandle on
// n.H and n.Ext). It returns once a's pod pings b's, in each family.
func NewHealPair(t testing.TB, name, typeName string, dual bool, newBackend func(n *Node) (backend.Backend, error)) *HealPair {
	t.Helper()
	h := &HealPair{Net: NewNet(t, name)}
	seg := h.Net.Segment("br0", 1500)
	addrs := func(i int) []string {
		if dual {
			return []string{fmt.Sprintf("198.51.100.%d/24", 10+i), fmt.Sprintf("fd00:198:51:100::%d/64", 10+i)}
		}
		return []string{fmt.Sprintf("198.51.100.%d/24", 10+i)}
	}
	subnets := func(i int) (string, string, []netip.Prefix) {
		v4 := fmt.Sprintf("10.244.%d.0/24", i)
		if !dual {
			return v4, "", []netip.Prefix{netip.MustParsePrefix(v4)}
		}
		v6 := fmt.Sprintf("fd00:10:244:%d::/64", i)
		return v4, v6, []netip.Prefix{netip.MustParsePrefix(v4), netip.MustParsePrefix(v6)}
	}
	h.A, h.B = h.Net.Node("a", seg, addrs(1)...), h.Net.Node("b", seg, addrs(2)...)
	var err error
	if h.BeA, err = newBackend(h.A); err != nil {
		t.Fatal(err)
	}
	beB, err := newBackend(h.B)
	if err != nil {
		t.Fatal(err)
	}
	cfg := BackendConfig(typeName, true, dual)
	s4, s6, pods := subnets(1)
	h.NwA, h.LA = Up(t, h.A, h.BeA, cfg, s4, s6)
	h.PA = h.Net.Pod(h.A, h.NwA.MTU(), pods...)
	s4, s6, pods = subnets(2)
	h.NwB, h.LB = Up(t, h.B, beB, cfg, s4, s6)
	h.PB = h.Net.Pod(h.B, h.NwB.MTU(), pods...)
	h.NwA.HandleEvents(context.Background(), Added(h.LB))
	h.NwB.HandleEvents(context.Background(), Added(h.LA))
	h.Rep = Heal(t, h.A, h.BeA, h.NwA, time.Hour)
	Ping(t, h.PA.NS, h.PB.Addr, 56, false)
	if dual {
		Ping(t, h.PA.NS, h.PB.Addr6, 56, false)
	}
	return h
}
