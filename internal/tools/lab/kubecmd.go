package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// Kubeconfig returns the admin kubeconfig of the Kubernetes lab in dir.
func Kubeconfig(dir string) (string, error) {
	spec, err := ReadSpec(dir)
	if err != nil {
		return "", err
	}
	if spec.Kube == nil {
		return "", fmt.Errorf("lab %s is not a Kubernetes lab: start one with `flannelctl lab up --kubernetes`", spec.Name)
	}
	p := KubeconfigPath(dir)
	if !exists(p) {
		return "", fmt.Errorf("lab %s has no kubeconfig yet (%s): is it up? `flannelctl lab status --name %s`", spec.Name, p, spec.Name)
	}
	return p, nil
}

// Kubectl runs the lab's kubectl with the admin kubeconfig and args, with
// this process's stdio, and returns kubectl's exit code.
func Kubectl(ctx context.Context, dir string, args []string) (int, error) {
	kc, err := Kubeconfig(dir)
	if err != nil {
		return 0, err
	}
	spec, err := ReadSpec(dir)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, spec.Kube.bin("kubectl"), append([]string{"--kubeconfig", kc}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	return 0, nil
}

// describeKube prints a Kubernetes lab's nodes as the machine sees them
// (namespace, address, processes and memory of the node's cgroup), then
// as the cluster sees them (kubectl get nodes, the pods). It reports
// whether every node runs something and the API server answers.
func describeKube(ctx context.Context, out io.Writer, spec *Spec, tb *recorded) (bool, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return false, err
	}
	healthy := true
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tNAMESPACE\tUNDERLAY IP\tCGROUP\tPROCESSES\tMEMORY")
	for _, n := range tb.Nodes {
		rel := nodeCgroup(spec.Name, n.Name)
		procs := len(cgroupPids(hs, rel))
		if procs == 0 {
			healthy = false
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t/%s\t%d\t%d MiB\n", n.Name, n.NS, n.Addr, rel, procs, cgroupMemory(hs, rel)>>20)
	}
	if err := w.Flush(); err != nil {
		return false, err
	}
	for _, args := range [][]string{{"get", "nodes", "-o", "wide"}, {"get", "pods", "-A", "-o", "wide"}} {
		fmt.Fprintf(out, "\n$ kubectl %s\n", strings.Join(args, " "))
		kctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		res, err := exec.CommandContext(kctx, spec.Kube.bin("kubectl"),
			append([]string{"--kubeconfig", KubeconfigPath(spec.StateDir), "--request-timeout=10s"}, args...)...).CombinedOutput()
		cancel()
		_, _ = out.Write(res)
		if err != nil {
			fmt.Fprintf(out, "kubectl: %v\n", err)
			healthy = false
		}
	}
	return healthy, nil
}

// kubeDoctorArgv runs `flannelctl doctor` on a Kubernetes node as the
// DaemonSet's flanneld runs: kube subnet manager, the node's own
// subnet.env (the DaemonSet's hostPath /run/flannel), its health port.
func kubeDoctorArgv(dir, node, self string) []string {
	n := nodeAt(dir, node)
	return []string{self, "doctor", "--kube-subnet-mgr",
		"--kubeconfig-file=" + filepath.Join(kubeDir(dir), "apiserver", "admin.kubeconfig"),
		"--node-name=" + node, "--subnet-file=" + n.root("/run/flannel/subnet.env"),
		fmt.Sprintf("--healthz=127.0.0.1:%d", healthzPort)}
}

// kubeNodeEnter is the nsenter prefix that runs a command in a Kubernetes
// node's network and mount namespaces (where its containerd socket and
// directories are), or nil when target is no running node.
func kubeNodeEnter(dir string, tb *testbed.Testbed, target string) []string {
	for _, nd := range tb.Nodes {
		if nd.Name != target && nd.NS != target {
			continue
		}
		n := nodeAt(dir, nd.Name)
		data, err := os.ReadFile(n.holderPidFile())
		if err != nil {
			return nil
		}
		ns := "/proc/" + strings.TrimSpace(string(data)) + "/ns/"
		if !exists(ns + "mnt") {
			return nil
		}
		return []string{"nsenter", "--net=" + ns + "net", "--mount=" + ns + "mnt", "--"}
	}
	return nil
}
