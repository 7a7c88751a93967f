package traffic

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

// scriptedFamily replays one (changed, err) result per sync call and then
// reports "in sync" forever.
type scriptedFamily struct {
	mu      sync.Mutex
	results []syncResult
	calls   int
}

type syncResult struct {
	changed bool
	err     error
}

func (f *scriptedFamily) sync(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(f.results) == 0 {
		return false, nil
	}
	r := f.results[0]
	f.results = f.results[1:]
	return r.changed, r.err
}

func (f *scriptedFamily) cleanup(context.Context) error { return nil }

func (f *scriptedFamily) remaining() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.results)
}

func TestApplyReportsRepairsOnlyAfterInstalling(t *testing.T) {
	boom := errors.New("boom")
	f := &scriptedFamily{results: []syncResult{
		{changed: true},             // installs
		{changed: false},            // nothing to do
		{changed: true},             // someone deleted a rule
		{changed: true, err: boom},  // half-repaired, then failed
		{changed: true},             // after Cleanup: installs again
		{changed: false, err: boom}, // plain failure
	}}
	m := &manager{kind: "test", families: []familyRules{f}}
	ctx := context.Background()
	step := func(wantRepaired, wantErr bool) {
		t.Helper()
		repaired, err := m.Apply(ctx)
		if repaired != wantRepaired || (err != nil) != wantErr {
			t.Fatalf("Apply() = %v, %v; want repaired=%v, error=%v", repaired, err, wantRepaired, wantErr)
		}
	}
	step(false, false)
	step(false, false)
	step(true, false)
	step(true, true)
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	step(false, false)
	step(false, true)
}

func TestRunLogsEachRepairAndEachDistinctErrorOnce(t *testing.T) {
	var buf syncBuffer
	// Only the INFO sink: klog copies every error line into each lower
	// severity's sink as well.
	klog.LogToStderr(false)
	klog.SetOutputBySeverity("INFO", &buf)
	defer klog.LogToStderr(true)

	same := errors.New("iptables: resource temporarily unavailable")
	f := &scriptedFamily{results: []syncResult{
		{err: same}, {err: same}, {err: same},
		{err: errors.New("iptables: permission denied")},
		{changed: true}, // recovers: rules had to be rewritten
		{}, {},
		{changed: true}, // deleted behind our back
		{},
	}}
	// The daemon Applies once before Run; Run's Applies are repairs.
	m := &manager{kind: "test", families: []familyRules{f}, applied: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx, 5*time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.remaining() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	klog.Flush()
	if f.remaining() > 0 {
		t.Fatalf("Run made only %d Apply calls in 5s with a 5ms resync", f.calls)
	}
	out := buf.String()
	for msg, want := range map[string]int{
		"resource temporarily unavailable": 1,
		"permission denied":                1,
		"are in place again":               1,
		"behind our back; restored":        2,
	} {
		if got := strings.Count(out, msg); got != want {
			t.Errorf("%q logged %d times, want %d; log:\n%s", msg, got, want, out)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
