package tbtest

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/testbed"
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
