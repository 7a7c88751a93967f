package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary as flanneld itself.
func TestMain(m *testing.M) {
	if os.Getenv("FLANNELD_TEST_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// SIGTERM while flanneld still waits for its datastore is a clean stop:
// exit 0, so that systemd does not mark the unit failed.
func TestSIGTERMDuringStartupExitsZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Nothing listens on port 1 of loopback: reading the config retries.
	cmd := exec.CommandContext(ctx, os.Args[0], "--etcd-endpoints=http://127.0.0.1:1",
		"--subnet-file="+filepath.Join(t.TempDir(), "subnet.env"))
	cmd.Env = append(os.Environ(), "FLANNELD_TEST_AS_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log = append(log, sc.Text())
		if strings.Contains(sc.Text(), "read network config") {
			break // start-up is under way and blocked on etcd
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		log = append(log, sc.Text())
	}
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d (%v) after SIGTERM during start-up, want 0; log:\n%s", code, err, strings.Join(log, "\n"))
	}
	if all := strings.Join(log, "\n"); !strings.Contains(all, "stopped by a signal before start-up completed") {
		t.Errorf("no line saying why it stopped:\n%s", all)
	}
}
