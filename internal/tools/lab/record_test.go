package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// newRecordedTestbed builds a testbed that records itself in dir, as the
// lab process does; the test's end removes whatever is left.
func newRecordedTestbed(t *testing.T, name, dir string, segments int) *testbed.Testbed {
	t.Helper()
	tbtest.NeedRoot(t, "ip", "sleep")
	tbtest.NeedRangesFree(t)
	ctx := tbtest.Ctx(t, 2*time.Minute)
	tb, err := testbed.New(ctx, testbed.Options{Name: name, Nodes: 2, Segments: segments, StateDir: dir, Recorder: record{dir}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		_ = tb.Close(context.Background())
		_ = cleanup(name, dir)
		_ = removeOwn(dir)
	})
	return tb
}

// The record lets another process load the topology, find the running
// processes (and only those: a pid reused by a stranger is not ours) and
// stop them; cleanup removes everything, twice without complaint.
func TestRecordLoadAndCleanup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	tb := newRecordedTestbed(t, "lbrec", dir, 2)
	ctx := tbtest.Ctx(t, time.Minute)
	n := tb.Nodes[1]
	p, err := tb.StartProcess(ctx, n.NS, filepath.Join(n.Dir, "sleep.log"), "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	stranger := exec.Command("sleep", "30")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stranger.Process.Kill(); _ = stranger.Wait() }()
	fake := &testbed.Proc{Pid: stranger.Process.Pid, Argv: []string{"sleep", "30"}, StartTime: 1}
	if err := (record{dir}).Started(fake); err != nil {
		t.Fatal(err)
	}

	loaded, err := loadTestbed("lbrec", dir)
	if err != nil {
		t.Fatalf("loadTestbed: %v", err)
	}
	if len(loaded.Nodes) != 2 || loaded.Nodes[1].Addr != n.Addr || loaded.Nodes[1].Segment != 2 || loaded.Router == nil {
		t.Errorf("loaded topology: %+v", loaded.Testbed)
	}
	if len(loaded.procs) != 1 || loaded.procs[0].Pid != p.Pid {
		t.Errorf("loaded processes %+v, want only pid %d", loaded.procs, p.Pid)
	}
	if _, err := os.Stat((record{dir}).pidFile(fake.Pid)); !os.IsNotExist(err) {
		t.Errorf("the stranger's pid file was not removed as stale: %v", err)
	}
	if _, err := loadTestbed("other", dir); err == nil {
		t.Errorf("loadTestbed under another name succeeded")
	}

	// A fresh call, as after a crash of the lab process.
	if err := cleanup("lbrec", dir); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("pid %d survived cleanup", p.Pid)
	}
	if st, err := procStat(stranger.Process.Pid); err != nil || st.State == "Z" {
		t.Errorf("cleanup killed a process it did not start: %v %q", err, st.State)
	}
	if err := removeOwn(dir); err != nil {
		t.Fatal(err)
	}
	if left, _ := testbed.ListNS("fl-lbrec-"); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir still there: %v", err)
	}
	if err := cleanup("lbrec", dir); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

// TestCleanupAfterCrash builds a recorded testbed in a child process,
// kills that process with SIGKILL and removes the testbed with cleanup
// from here: the processes it left are no children of ours.
func TestCleanupAfterCrash(t *testing.T) {
	if os.Getenv("LAB_CRASH_HELPER") != "" {
		crashHelper()
		return
	}
	tbtest.NeedRoot(t, "ip", "sleep")
	tbtest.NeedRangesFree(t)
	dir := filepath.Join(t.TempDir(), "state")
	helper := exec.Command(os.Args[0], "-test.run=^TestCleanupAfterCrash$")
	helper.Env = append(os.Environ(), "LAB_CRASH_HELPER="+dir)
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		_ = cleanup("lbcr", dir)
		_ = removeOwn(dir)
	})
	var pid int
	buf := make([]byte, 64)
	nr, _ := out.Read(buf)
	if _, err := fmt.Sscanf(string(buf[:nr]), "READY %d", &pid); err != nil {
		t.Fatalf("helper said %q: %v", buf[:nr], err)
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	left := &recordedProc{Pid: pid, Argv: []string{"sleep"}}
	if st, err := procStat(pid); err != nil {
		t.Fatalf("the helper's process %d died with it: %v", pid, err)
	} else {
		left.StartTime = st.Starttime
	}
	if err := cleanup("lbcr", dir); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	// Under load the kill and the exit (with its namespace teardown) can
	// take a while; the state is reported if it never happens.
	if !left.waitGone(20 * time.Second) {
		st, err := procStat(pid)
		t.Fatalf("pid %d still alive 20 s after cleanup: state %q (%v)", pid, st.State, err)
	}
	if left, _ := testbed.ListNS("fl-lbcr-"); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
}

func crashHelper() {
	ctx := context.Background()
	dir := os.Getenv("LAB_CRASH_HELPER")
	tb, err := testbed.New(ctx, testbed.Options{Name: "lbcr", Nodes: 1, StateDir: dir, Recorder: record{dir}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	p, err := tb.StartProcess(ctx, tb.Nodes[0].NS, filepath.Join(tb.Nodes[0].Dir, "sleep.log"), "sleep", "300")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("READY %d\n", p.Pid)
	time.Sleep(time.Hour) // until the test kills this process
}
