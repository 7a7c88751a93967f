package backend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type countingReporter struct {
	mu       sync.Mutex
	repaired map[string]int
	failed   int
}

func (c *countingReporter) Repaired(kind string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.repaired[kind] += n
}

func (c *countingReporter) ReconcileFailed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failed++
}

// A reconcile that fails is retried with doubling back-off, without any
// notification, kick or tick asking for it, until it succeeds; each
// failure and each repair is reported.
func TestHealerRetriesWithBackoff(t *testing.T) {
	var mu sync.Mutex
	var calls []time.Time
	reconcile := func() (Repairs, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) <= 3 {
			return Repairs{"route": 1}, errors.New("route 10.244.2.0/24: network is down")
		}
		return Repairs{"fdb": 1}, nil
	}
	kick := NewKicker()
	rep := &countingReporter{repaired: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunHealer(ctx, HealLoop{Name: "test", Config: HealConfig{Interval: time.Hour, Report: rep},
			Owned: func() *Owned { return &Owned{Ext: -1} }, Reconcile: reconcile, Kick: kick})
	}()
	// Subscribing pokes the loop once (notifications may have been missed
	// before): that is the first reconcile. Nothing else pokes it, since
	// nothing is owned.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(calls)
		mu.Unlock()
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reconciles within 5 s, want 4 (3 failures retried)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a fifth call would come within this if retries did not stop
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 4 {
		t.Errorf("%d reconciles, want 4: retries must stop after a success", len(calls))
	}
	// The gaps after each failure: 100, 200, 400 ms.
	for i, want := range []time.Duration{100, 200, 400} {
		gap := calls[i+1].Sub(calls[i])
		if gap < want*time.Millisecond || gap > want*time.Millisecond+250*time.Millisecond {
			t.Errorf("retry %d came after %s, want about %dms", i+1, gap, want)
		}
	}
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.failed != 3 || rep.repaired["route"] != 3 || rep.repaired["fdb"] != 1 {
		t.Errorf("reported failed=%d repaired=%v, want 3 failures, route=3, fdb=1", rep.failed, rep.repaired)
	}
}
