//go:build kubernetes

package k8s

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/docs"
)

// guideKubectl is the kubectl the Kubernetes lab runs (scripts/setup.sh
// builds it); the guides call it "kubectl".
const guideKubectl = "/var/cache/flannel-go/kube/kubectl-v1.37.2"

// TestGuidesOnTheKubernetesLab follows the operator's guides literally on
// a real cluster: `flannelctl lab up --kubernetes` (flannel installed from
// deploy/kube-flannel.yml with the image of scripts/image.sh), then every
// block marked `guide:k8s` in docs/*.md, run by bash with -e in the
// repository root, kubectl and flannelctl on PATH and KUBECONFIG the lab's.
func TestGuidesOnTheKubernetesLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the lab builds network namespaces")
	}
	root := guideRepoRoot(t)
	image := filepath.Join(root, "bin", "flannel-image.tar")
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("no %s: run scripts/image.sh first (the guides' doctor runs the image's flannelctl): %v", image, err)
	}
	bin := t.TempDir()
	guideRun(t, root, nil, 10*time.Minute, "go", "build", "-o", bin+"/", "./cmd/flannelctl")
	if err := os.Symlink(guideKubectl, filepath.Join(bin, "kubectl")); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(bin, "flannelctl")
	state := t.TempDir()
	lab := []string{"--name", "g1", "--state-root", state}
	t.Cleanup(func() {
		out, err := exec.Command(ctl, append([]string{"lab", "down"}, lab...)...).CombinedOutput()
		if err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	guideRun(t, root, nil, 10*time.Minute, append([]string{ctl, "lab", "up", "--kubernetes", "--nodes", "2", "--image-tar", image}, lab...)...)
	kubeconfig := strings.TrimSpace(guideRun(t, root, nil, time.Minute, append([]string{ctl, "lab", "kubeconfig"}, lab...)...))
	env := append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+bin+":"+os.Getenv("PATH"))
	// The blocks name the repository's files (deploy/patches/...) as an
	// operator in a checkout would, and leave files in the working
	// directory: a scratch directory with the checkout's deploy/ in it.
	work := t.TempDir()
	if err := os.Symlink(filepath.Join(root, "deploy"), filepath.Join(work, "deploy")); err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, guide := range []string{"INSTALL.md", "MIGRATING.md", "TROUBLESHOOTING.md"} {
		blocks, err := docs.Blocks(filepath.Join(root, "docs", guide), "k8s")
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			t.Logf("docs/%s:%d:\n%s", guide, b.Line, b.Text)
			out := guideRun(t, work, env, 10*time.Minute, "bash", "-c", "set -euo pipefail\n"+b.Text)
			t.Logf("output:\n%s", out)
			ran++
		}
	}
	if ran == 0 {
		t.Fatal("no guide:k8s block found in docs/")
	}
}

func guideRepoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// guideRun runs argv in dir and fails the test, with the output, unless it
// exits 0 within timeout.
func guideRun(t *testing.T, dir string, env []string, timeout time.Duration, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}
