//go:build kubernetes

package k8s

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/tools/lab"
)

// kubeLab is one `flannelctl lab up --kubernetes` under test, with its own
// state root so nothing lands in /run.
type kubeLab struct {
	t     *testing.T
	name  string
	root  string
	cs    kubernetes.Interface
	nodes []string
}

// imageTar is the flannel image the labs install (scripts/image.sh).
func imageTar(t *testing.T) string {
	p := os.Getenv("FLANNEL_IMAGE_TAR")
	if p == "" {
		p, _ = filepath.Abs("../../bin/flannel-image.tar")
	}
	var missing []string
	for _, f := range []string{p, filepath.Join(lab.DefaultKubeBinDir, "kubelet-"+lab.DefaultKubeVersion),
		filepath.Join(lab.DefaultContainerdDir, "containerd"), filepath.Join(lab.DefaultImageDir, "agnhost-2.66.1-r4.tar"),
		filepath.Join(lab.DefaultImageDir, "coredns-v1.14.6.tar")} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		tbtest.Unavailable(t, "needs %s: run scripts/setup.sh and scripts/image.sh", strings.Join(missing, ", "))
	}
	return p
}

// upLab starts a lab of n nodes; `lab down` runs when the test ends,
// whatever happened.
func upLab(t *testing.T, name string, n int, args ...string) *kubeLab {
	t.Helper()
	tbtest.NeedRoot(t, "nsenter", "ping", "iperf3")
	l := &kubeLab{t: t, name: name, root: t.TempDir()}
	for i := 1; i <= n; i++ {
		l.nodes = append(l.nodes, "n"+strconv.Itoa(i))
	}
	argv := append([]string{"--nodes", strconv.Itoa(n), "--kubernetes", "--image-tar", imageTar(t), "--timeout", "6m"}, args...)
	t.Cleanup(func() {
		if out, code := l.run(3*time.Minute, "down"); code != 0 {
			t.Errorf("lab down exited %d:\n%s", code, out)
		}
	})
	start := time.Now()
	out, code := l.run(7*time.Minute, "up", argv...)
	if code != 0 {
		t.Fatalf("lab up %s exited %d:\n%s", strings.Join(argv, " "), code, out)
	}
	t.Logf("lab up %s: %s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(l.root, name, "kube", "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if l.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return l
}

// run runs `flannelctl lab CMD --name N --state-root R ARGS...`.
func (l *kubeLab) run(timeout time.Duration, cmd string, args ...string) (string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.runCtx(ctx, cmd, args...)
}

func (l *kubeLab) runCtx(ctx context.Context, cmd string, args ...string) (string, int) {
	l.t.Helper()
	argv := append([]string{"lab", cmd, "--name", l.name, "--state-root", l.root}, args...)
	out, err := exec.CommandContext(ctx, flannelctl, argv...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		l.t.Fatalf("flannelctl %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out), 0
}

// kubectl runs kubectl against the lab and fails the test on an error.
func (l *kubeLab) kubectl(args ...string) string {
	l.t.Helper()
	out, code := l.run(2*time.Minute, "kubectl", append([]string{"--"}, args...)...)
	if code != 0 {
		l.t.Fatalf("kubectl %s: exit %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// exec runs a command of this machine in a pod's (NAMESPACE/NAME) or a
// node's network namespace.
func (l *kubeLab) exec(timeout time.Duration, target string, argv ...string) (string, error) {
	l.t.Helper()
	out, code := l.run(timeout, "exec", append([]string{target, "--"}, argv...)...)
	if code != 0 {
		return out, fmt.Errorf("%s: %s: exit %d: %s", target, strings.Join(argv, " "), code, strings.TrimSpace(out))
	}
	return out, nil
}

// subnetEnv is a node's /run/flannel/subnet.env, as its flanneld wrote it.
func (l *kubeLab) subnetEnv(node string) string {
	data, err := os.ReadFile(filepath.Join(l.root, l.name, "kube", node, "root", "run", "flannel", "subnet.env"))
	if err != nil {
		l.t.Fatalf("node %s: %v", node, err)
	}
	return string(data)
}

// check runs `flannelctl lab check`: every probe pod pair, the MTU
// boundary, the packet walk, all from the lab's view of the cluster.
func (l *kubeLab) check(t *testing.T) {
	t.Helper()
	start := time.Now()
	out, code := l.run(5*time.Minute, "check")
	if code != 0 || !strings.Contains(out, "checks passed") {
		t.Errorf("lab check exited %d:\n%s", code, out)
		return
	}
	t.Logf("lab check passed (%s)", time.Since(start).Round(100*time.Millisecond))
	if _, paths, ok := strings.Cut(out, "\ndata path per pod"); ok {
		paths, _, _ = strings.Cut(paths, "\n\n")
		t.Logf("data path per pod%s", paths)
	}
}
