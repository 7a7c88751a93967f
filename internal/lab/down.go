package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/flannelgo/flannel/internal/testbed"
)

// stopGrace is how long the lab process gets to stop flanneld and etcd
// and remove namespaces before it is killed.
const stopGrace = 90 * time.Second

// Down removes lab name: it asks the lab process to tear the lab down,
// then removes whatever is left, so it also works after the lab process
// crashed (flanneld processes recorded in the state dir are stopped, every
// fl-<name>-* namespace is deleted, the state dir is removed).
func Down(ctx context.Context, out io.Writer, name, dir string) error {
	if err := NeedRoot(); err != nil {
		return err
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("--name %q: use 1 to 6 characters a-z, 0-9", name)
	}
	var errs []error
	lp, err := readLabProc(dir)
	if err != nil {
		errs = append(errs, err)
	}
	wasUp := lp.alive()
	if wasUp {
		fmt.Fprintf(out, "lab %s: stopping the lab process (pid %d)\n", name, lp.Pid)
		errs = append(errs, stopLabProc(lp, LogPath(dir)))
	}
	left := leftovers(name, dir)
	if len(left) == 0 && !wasUp {
		fmt.Fprintf(out, "lab %s: nothing to remove\n", name)
		return nil
	}
	if len(left) > 0 {
		fmt.Fprintf(out, "lab %s: removing %s\n", name, strings.Join(left, ", "))
	}
	errs = append(errs, cleanup(name, dir), removeOwn(dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s down: %w", name, err)
	}
	fmt.Fprintf(out, "lab %s: down\n", name)
	return nil
}

// stopLabProc stops the lab process: SIGTERM lets it tear the lab down,
// SIGKILL comes after stopGrace.
func stopLabProc(lp *recordedProc, logPath string) error {
	killed, err := lp.stop(stopGrace)
	if err == nil && killed {
		err = fmt.Errorf("lab process %d did not stop within %s of SIGTERM and was killed; see %s", lp.Pid, stopGrace, logPath)
	}
	return err
}

// leftovers names what the lab process did not remove.
func leftovers(name, dir string) []string {
	var out []string
	ents, err := os.ReadDir("/run/netns")
	if err == nil {
		n := 0
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "fl-"+name+"-") {
				n++
			}
		}
		if n > 0 {
			out = append(out, fmt.Sprintf("%d namespace(s) fl-%s-*", n, name))
		}
	}
	if cgroupLeft(name) {
		out = append(out, "cgroup /"+labCgroup(name))
	}
	if _, err := os.Stat(dir); err == nil {
		out = append(out, "state "+dir)
	}
	return out
}

// Exec runs argv in the namespace of a pod (n1-p1, or NAMESPACE/NAME in a
// Kubernetes lab) or node (n1) of the lab, with this process's stdio, and returns the command's exit code.
func Exec(ctx context.Context, dir, target string, argv []string) (int, error) {
	if err := NeedRoot(); err != nil {
		return 0, err
	}
	if len(argv) == 0 {
		return 0, errors.New("no command: use flannelctl lab exec POD -- CMD [ARGS...]")
	}
	spec, err := ReadSpec(dir)
	if err != nil {
		return 0, err
	}
	tb, err := loadTestbed(spec.Name, dir)
	if err != nil {
		return 0, err
	}
	pre, err := enterArgv(ctx, dir, spec, tb.Testbed, target)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, pre[0], append(pre[1:], argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil // as a shell reports it
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run %s in %s: %w", argv[0], target, err)
	}
	return 0, nil
}

// enterArgv is the command prefix that enters target: a pod or node of
// the lab, or NAMESPACE/NAME of a Kubernetes lab's pod.
func enterArgv(ctx context.Context, dir string, spec *Spec, tb *testbed.Testbed, target string) ([]string, error) {
	if isPodTarget(spec, target) {
		return kubePodEnter(ctx, dir, spec, target)
	}
	ns, err := findNS(tb, target)
	if err != nil {
		return nil, err
	}
	if spec.Kube != nil {
		if pre := kubeNodeEnter(dir, tb, target); pre != nil {
			return pre, nil
		}
	}
	return []string{"ip", "netns", "exec", ns}, nil
}

func findNS(tb *testbed.Testbed, target string) (string, error) {
	var names []string
	for _, n := range tb.Nodes {
		for _, p := range n.Pods {
			if p.Name == target || p.NS == target {
				return p.NS, nil
			}
			names = append(names, p.Name)
		}
	}
	for _, n := range tb.Nodes {
		if n.Name == target || n.NS == target {
			return n.NS, nil
		}
	}
	for _, h := range []*testbed.Host{tb.Hub, tb.Router} {
		if h != nil && (h.Name == target || h.NS == target) {
			return h.NS, nil
		}
	}
	return "", fmt.Errorf("lab %s has no pod or node %q (pods: %s; nodes n1..n%d, hub)", tb.Name, target, strings.Join(names, " "), len(tb.Nodes))
}

// DoctorArgv is the command line that runs `flannelctl doctor` (the binary
// self) inside node's namespace, with the datastore flags the lab's
// flanneld uses, followed by extra.
func DoctorArgv(dir, node, self string, extra []string) ([]string, error) {
	spec, err := ReadSpec(dir)
	if err != nil {
		return nil, err
	}
	tb, err := loadTestbed(spec.Name, dir)
	if err != nil {
		return nil, err
	}
	for _, n := range tb.Nodes {
		if (n.Name == node || n.NS == node) && spec.Kube != nil {
			return append(kubeDoctorArgv(dir, n.Name, self), extra...), nil
		}
		if n.Name == node || n.NS == node {
			argv := []string{self, "doctor", "--etcd-endpoints=" + tb.EtcdEndpoint(), "--subnet-file=" + n.SubnetFile,
				fmt.Sprintf("--healthz=127.0.0.1:%d", healthzPort)}
			return append(argv, extra...), nil
		}
	}
	return nil, fmt.Errorf("lab %s has no node %q (nodes n1..n%d)", tb.Name, node, len(tb.Nodes))
}
