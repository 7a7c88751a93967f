// Package leasewatch runs a subnet manager's WatchLeases for a test and
// keeps every batch it sends: the one recorder of the managers' own tests
// and of the contract test both managers are held to.
package leasewatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/lease"
)

// Watcher is the part of subnet.Manager a recorder needs.
type Watcher interface {
	WatchLeases(ctx context.Context, events chan<- []lease.Event) error
}

// Recorder holds the batches one WatchLeases call sent, in order.
type Recorder struct {
	mu      sync.Mutex
	batches [][]lease.Event
	got     chan struct{}
}

// Start runs w.WatchLeases until the test ends, then checks that it
// returned context.Canceled. Each batch is recorded, then handed to each
// of then, in the recorder's goroutine (the contract test passes the
// batches on through the daemon's lease set).
func Start(t testing.TB, w Watcher, then ...func(context.Context, []lease.Event)) *Recorder {
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan []lease.Event)
	r := &Recorder{got: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { done <- w.WatchLeases(ctx, events) }()
	go func() {
		for {
			select {
			case b := <-events:
				r.mu.Lock()
				r.batches = append(r.batches, b)
				r.mu.Unlock()
				for _, f := range then {
					f(ctx, b)
				}
				select {
				case r.got <- struct{}{}:
				default:
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchLeases returned %v, want context.Canceled", err)
		}
	})
	return r
}

// Batches is a copy of what was sent so far.
func (r *Recorder) Batches() [][]lease.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]lease.Event(nil), r.batches...)
}

// WaitFor waits until pred holds for the batches sent so far, for at most
// within, and returns how long that took. pred runs under the recorder's
// lock and must not keep the slice.
func (r *Recorder) WaitFor(t testing.TB, what string, within time.Duration, pred func(batches [][]lease.Event) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(within)
	for {
		r.mu.Lock()
		ok := pred(r.batches)
		r.mu.Unlock()
		if ok {
			return time.Since(start)
		}
		select {
		case <-r.got:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			var all []lease.Event
			for _, b := range r.Batches() {
				all = append(all, b...)
			}
			t.Fatalf("%s: not seen within %s; events: %s", what, within, Describe(all))
		}
	}
}

// HasEvent says whether any batch holds an event of type typ for key.
func HasEvent(batches [][]lease.Event, typ lease.EventType, key string) bool {
	for _, b := range batches {
		for _, ev := range b {
			if ev.Type == typ && ev.Lease.Key() == key {
				return true
			}
		}
	}
	return false
}

// Describe prints events for a failure message: type, lease, BackendData.
func Describe(evs []lease.Event) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		parts[i] = fmt.Sprintf("%s %s %s", e.Type, e.Lease.String(), e.Lease.Attrs.BackendData)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}
