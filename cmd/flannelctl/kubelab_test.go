package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/tools/lab"
)

// kubeLabPrereqs says what `lab up --kubernetes` lacks on this machine
// (scripts/setup.sh builds it; scripts/image.sh the flannel image), or "".
func kubeLabPrereqs(t *testing.T) (imageTar, missing string) {
	imageTar = os.Getenv("FLANNEL_IMAGE_TAR")
	if imageTar == "" {
		imageTar, _ = filepath.Abs("../../bin/flannel-image.tar")
	}
	var miss []string
	containerd := os.Getenv("KUBE_CONTAINERD_DIR")
	if containerd == "" {
		containerd = lab.DefaultContainerdDir
	}
	for _, p := range []string{
		filepath.Join(lab.DefaultKubeBinDir, "kubelet-"+lab.DefaultKubeVersion),
		filepath.Join(containerd, "containerd"),
		filepath.Join(lab.DefaultImageDir, "pause-3.10.2.tar"),
		imageTar,
	} {
		if _, err := os.Stat(p); err != nil {
			miss = append(miss, p)
		}
	}
	return imageTar, strings.Join(miss, ", ")
}

// A 3-node Kubernetes lab: nodes Ready, the flannel DaemonSet (applied from
// deploy/kube-flannel.yml) Ready on each, kubectl through the lab; `lab
// down` leaves no process, namespace, mount, cgroup or iptables rule.
func TestLabKubernetes(t *testing.T) {
	imageTar, missing := kubeLabPrereqs(t)
	if missing != "" {
		tbtest.Unavailable(t, "needs %s: run scripts/setup.sh and scripts/image.sh", missing)
	}
	l := needLab(t, "tk8")
	links := rootLinks(t)
	kubeRulesBefore := hostKubeRules(t)
	start := time.Now()
	args := []string{"--nodes", "3", "--kubernetes", "--image-tar", imageTar, "--timeout", "10m"}
	if d := os.Getenv("KUBE_CONTAINERD_DIR"); d != "" {
		args = append(args, "--containerd-dir", d)
	}
	out := l.up(args...)
	t.Logf("lab up --kubernetes: %s\n%s", time.Since(start).Round(time.Second), out)

	nodes, code := l.run(time.Minute, "kubectl", "--", "get", "nodes", "--no-headers")
	if code != 0 || strings.Count(nodes, " Ready ") != 3 {
		t.Errorf("kubectl get nodes: exit %d, want 3 Ready:\n%s", code, nodes)
	}
	ds, code := l.run(time.Minute, "kubectl", "--", "-n", "kube-flannel", "get", "ds", "kube-flannel-ds",
		"-o", "jsonpath={.status.numberReady}")
	if code != 0 || strings.TrimSpace(ds) != "3" {
		t.Errorf("DaemonSet ready pods: exit %d, %q, want 3", code, ds)
	}
	kc, code := l.run(time.Minute, "kubeconfig")
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(kc), "admin.kubeconfig") {
		t.Errorf("lab kubeconfig: exit %d, %q", code, kc)
	}
	cgPids := labCgroupPids(t, l.name)
	if len(cgPids) == 0 {
		t.Error("no process in the lab's cgroup")
	}

	l.downAndVerify(links)
	for _, pid := range cgPids {
		if !exitsSoon(pid) {
			t.Errorf("pid %d of the lab's cgroup survived down", pid)
		}
	}
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/flannel-lab-" + l.name); len(m) > 0 {
		t.Errorf("cgroups left: %v", m)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), l.stateRoot) {
		t.Errorf("mounts of the lab left in the host's mount namespace:\n%s", grepLines(string(mi), l.stateRoot))
	}
	if after := hostKubeRules(t); after != kubeRulesBefore {
		t.Errorf("the host's nftables ruleset gained Kubernetes rules:\nbefore %s\nafter %s", kubeRulesBefore, after)
	}
}

// labCgroupPids lists the processes in the lab's cgroup (pids hierarchy).
func labCgroupPids(t *testing.T, name string) []int {
	var pids []int
	root := "/sys/fs/cgroup/pids/flannel-lab-" + name
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// hostKubeRules counts the KUBE- and FLANNEL lines of the host's nftables
// ruleset (iptables-nft included). The legacy tables are never listed:
// listing them creates them.
func hostKubeRules(t *testing.T) string {
	out, err := exec.Command("nft", "list", "ruleset").Output()
	if err != nil {
		t.Logf("nft list ruleset: %v", err)
		return ""
	}
	return strconv.Itoa(strings.Count(string(out), "KUBE-")) + " KUBE-, " + strconv.Itoa(strings.Count(string(out), "FLANNEL")) + " FLANNEL"
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
