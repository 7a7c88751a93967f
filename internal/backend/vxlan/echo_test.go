package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/backend"
	bt "github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// The kernel's notifications about what the network itself programs
// (routes, neighbours and FDB entries of added and removed peers) do not
// wake the healer: at thousands of peers each wake-up re-reads the whole
// kernel state. A route deleted by hand still does, and is restored.
func TestOwnWritesDoNotWakeHealer(t *testing.T) {
	tn := bt.NewNet(t, "tbk-vx-echo")
	a := tn.Node("a", tn.Segment("br0", 1500), "198.51.100.11/24")
	be, err := NewWithHandle(a.H, &a.NSH, a.Ext, json.RawMessage(`{"Type":"vxlan"}`))
	if err != nil {
		t.Fatal(err)
	}
	nw, _ := bt.Up(t, a, be, bt.BackendConfig(TypeName, true, false), "10.244.1.0/24", "")
	n := nw.(*network)
	nsh, err := netns.GetFromName(a.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	var passes atomic.Int64
	hctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l := n.peers.Loop(backend.HealConfig{Interval: time.Hour}, &nsh)
		reconcile := l.Reconcile
		l.Reconcile = func() (backend.Repairs, error) { passes.Add(1); return reconcile() }
		backend.RunHealer(hctx, l)
	}()
	defer func() { cancel(); <-done }()
	// Subscribing pokes the loop once: the first pass.
	bt.WaitFor(t, 2*time.Second, "first reconcile", func() error { return atLeast(&passes, 1) })

	var peers []lease.Lease
	for i := range 50 {
		peers = append(peers, lease.Lease{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", 10+i)), Attrs: lease.Attrs{
			PublicIP: netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}), BackendType: TypeName,
			BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0e:5c:00:00:00:%02x"}`, i))}})
	}
	n.HandleEvents(ctx, added(peers...))
	bt.WaitFor(t, 2*time.Second, "50 peer routes", func() error { return routeCount(t, a.NS, 50) })
	// A wake-up is served within 10 ms; give the notifications of 150
	// writes ten times that to arrive.
	time.Sleep(300 * time.Millisecond)
	if got := passes.Load(); got != 1 {
		t.Fatalf("%d reconciles after programming 50 peers, want 1 (the first): the network's own writes woke the healer", got)
	}

	var removed []lease.Event
	for _, l := range peers[:10] {
		removed = append(removed, lease.Event{Type: lease.Removed, Lease: l})
	}
	n.HandleEvents(ctx, removed)
	bt.WaitFor(t, 2*time.Second, "40 peer routes", func() error { return routeCount(t, a.NS, 40) })
	time.Sleep(300 * time.Millisecond)
	if got := passes.Load(); got != 1 {
		t.Fatalf("%d reconciles after removing 10 peers, want 1: the network's own deletions woke the healer", got)
	}

	// Drift still wakes it: a peer's route deleted by hand comes back.
	bt.Run(t, "ip", "-n", a.NS, "route", "del", "10.244.59.0/24")
	bt.WaitFor(t, time.Second, "deleted route restored", func() error { return routeCount(t, a.NS, 40) })
	if got := passes.Load(); got != 2 {
		t.Errorf("%d reconciles after one route was deleted by hand, want 2", got)
	}
	// A stranger's route on flannel.1 is drift too, and removed.
	bt.Run(t, "ip", "-n", a.NS, "route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "flannel.1", "onlink")
	bt.WaitFor(t, time.Second, "stale route removed", func() error { return routeCount(t, a.NS, 40) })
}

func atLeast(c *atomic.Int64, n int64) error {
	if got := c.Load(); got < n {
		return fmt.Errorf("%d, want at least %d", got, n)
	}
	return nil
}

// routeCount checks that flannel.1 in ns carries exactly want peer routes
// (routes with a gateway; the device's own address has none).
func routeCount(t *testing.T, ns string, want int) error {
	t.Helper()
	got := 0
	err := kernelstate.With(ns, func(r *kernelstate.Reader) error {
		tables, err := r.VXLAN("flannel.1", false)
		if err != nil {
			return err
		}
		for _, rt := range tables.Routes {
			if rt.Gw.IsValid() {
				got++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%d routes on flannel.1, want %d", got, want)
	}
	return nil
}
