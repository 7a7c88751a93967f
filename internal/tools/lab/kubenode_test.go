package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// A Kubernetes node's processes run in its network namespace and a mount
// namespace of its own: sysfs shows the node's interfaces, the cgroup
// hierarchies are there, the node's directories and kubelet's sysctls are
// its own and the host's stay as they were. Killing the lab's cgroup ends
// every process of the node, also one that left the process tree, and
// leaves no cgroup behind.
func TestKubeNodeNamespaces(t *testing.T) {
	tbtest.NeedRoot(t, "ip", "sleep", "nsenter", "unshare", "mount")
	dir := filepath.Join(t.TempDir(), "state")
	tb := newRecordedTestbed(t, "lbkn", dir, 1)
	ctx := tbtest.Ctx(t, time.Minute)
	hs, err := cgroupHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = killCgroup(labCgroup("lbkn")) })
	n := &kubeNode{Node: tb.Nodes[0], dir: filepath.Join(dir, "kube", "n1"), cgroup: nodeCgroup("lbkn", "n1")}
	cni := t.TempDir()
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if err := os.WriteFile(filepath.Join(cni, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.prepare(cni); err != nil {
		t.Fatal(err)
	}
	if err := makeCgroup(hs, n.cgroup); err != nil {
		t.Fatal(err)
	}
	hostOvercommit := readTrim(t, "/proc/sys/vm/overcommit_memory")
	if err := n.startHolder(ctx, hs); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.root("/etc/cni/net.d/marker"), []byte("n1"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `ls /sys/class/net | tr '\n' ' '; echo; cat /proc/sys/vm/overcommit_memory; ls /etc/cni/net.d; ls /sys/fs/cgroup | tr '\n' ' '; echo; ` +
		`echo nsfs $(grep -c ' - nsfs ' /proc/self/mountinfo); setsid sleep 300 & echo started; sleep 300`
	p, err := n.start(ctx, hs, "probe", nil, "sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFileContains(p.LogFile, "started", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(p.LogFile)
	lines := strings.Split(string(out), "\n")
	if len(lines) < 4 || !strings.Contains(lines[0], "eth0") || lines[1] != "1" || lines[2] != "marker" || !strings.Contains(lines[3], "memory") {
		t.Errorf("inside the node:\n%s", out)
	}
	// The host's namespace mounts (the testbed's own, at least) are not
	// held by the node.
	if !strings.Contains(string(out), "nsfs 0\n") {
		t.Errorf("namespace bind mounts copied into the node's mount namespace:\n%s", out)
	}
	if got := readTrim(t, "/proc/sys/vm/overcommit_memory"); got != hostOvercommit {
		t.Errorf("host vm.overcommit_memory %s, was %s", got, hostOvercommit)
	}
	if pids := cgroupPids(hs, labCgroup("lbkn")); len(pids) < 3 { // holder, probe, its setsid sleep
		t.Errorf("cgroup holds %v, want the holder, the probe and its sleeps", pids)
	}
	if err := killCgroup(labCgroup("lbkn")); err != nil {
		t.Fatal(err)
	}
	if cgroupLeft("lbkn") {
		t.Error("cgroup left after killCgroup")
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Error("probe still running after killCgroup")
	}
	if err := exec.Command("pgrep", "-f", n.readyFile()).Run(); err == nil {
		t.Error("the mount namespace holder still runs")
	}
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func waitFileContains(p, s string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), s) {
			return nil
		}
		if time.Now().After(deadline) {
			return os.ErrDeadlineExceeded
		}
		time.Sleep(50 * time.Millisecond)
	}
}
