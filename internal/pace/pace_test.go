package pace

import (
	"context"
	"testing"
	"time"
)

func TestBackoffDoublesToMaxAndResets(t *testing.T) {
	b := New(Policy{Min: 100 * time.Millisecond, Max: time.Second})
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("wait %d = %s, want %s", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Fatalf("after Reset: %s, want 100ms", got)
	}
}

func TestBackoffJitterStaysInRange(t *testing.T) {
	b := New(Policy{Min: time.Second, Max: time.Second, Jitter: 0.2})
	for range 1000 {
		if got := b.Next(); got < 800*time.Millisecond || got > 1200*time.Millisecond {
			t.Fatalf("wait %s outside 800ms..1.2s", got)
		}
	}
}

func TestSettledResetsOnlyAfterStable(t *testing.T) {
	b := New(Policy{Min: time.Second, Max: 8 * time.Second, Stable: time.Minute})
	b.Next()
	b.Next()
	b.Settled(59 * time.Second)
	if got := b.Next(); got != 4*time.Second {
		t.Fatalf("short attempt reset the back-off: %s, want 4s", got)
	}
	b.Settled(time.Minute)
	if got := b.Next(); got != time.Second {
		t.Fatalf("stable attempt did not reset: %s, want 1s", got)
	}
}

func TestEveryStopsWhenFnSaysSo(t *testing.T) {
	n := 0
	Every(context.Background(), time.Millisecond, 0.5, func(context.Context) bool {
		n++
		return n < 3
	})
	if n != 3 {
		t.Fatalf("fn ran %d times, want 3", n)
	}
}

func TestEveryStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Every(ctx, time.Hour, 0, func(context.Context) bool {
		t.Fatal("fn ran after ctx ended")
		return true
	})
}

func TestSpread(t *testing.T) {
	for range 1000 {
		if got := spread(10*time.Second, 0.1); got < 9*time.Second || got > 11*time.Second {
			t.Fatalf("spread %s outside 9s..11s", got)
		}
	}
}

func TestTickerFiresAgainOnlyAfterNext(t *testing.T) {
	tk := NewTicker(5*time.Millisecond, 0.5)
	defer tk.Stop()
	start := time.Now()
	<-tk.C()
	if d := time.Since(start); d < 2*time.Millisecond {
		t.Fatalf("first tick after %s, want at least 2.5ms", d)
	}
	select {
	case <-tk.C():
		t.Fatal("ticked again without Next")
	case <-time.After(30 * time.Millisecond):
	}
	tk.Next()
	select {
	case <-tk.C():
	case <-time.After(5 * time.Second):
		t.Fatal("no tick within 5s of Next")
	}
}
