//go:build image

package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/tools/lab"
)

// The Kubernetes lab's agnhost and glibc-dns-testing images (built by
// scripts/build-kube-images.sh, which setup runs) hold what Kubernetes'
// e2e specs exec in them: a probe that finds no nc or curl fails the spec
// before a packet is sent, which says nothing about flannel.
func TestLabTestImages(t *testing.T) {
	bin := filepath.Join(containerdDir(), "usr", "bin")
	tbtest.NeedRoot(t, "runc", filepath.Join(bin, "containerd"), filepath.Join(bin, "ctr"))
	ctx := tbtest.Ctx(t, 5*time.Minute)
	archives := map[string]string{}
	for _, a := range lab.KubeImages() {
		for _, name := range []string{"agnhost", "glibc-dns-testing"} {
			if strings.HasPrefix(a, name+"-") {
				archives[name] = filepath.Join(lab.DefaultImageDir, a)
			}
		}
	}
	if len(archives) != 2 {
		t.Fatalf("lab.KubeImages() %q: want an agnhost and a glibc-dns-testing archive", lab.KubeImages())
	}
	c := startContainerd(ctx, t, bin)
	for name, archive := range archives {
		if _, err := os.Stat(archive); err != nil {
			t.Fatalf("%v: run scripts/build-kube-images.sh (scripts/setup.sh does)", err)
		}
		c.ctr(ctx, t, "images", "import", archive)
		r := &runner{c: c, tag: archiveTag(t, archive)}
		// The kubelet mounts the pod's hosts file; the DNS specs look
		// names up in it with getent.
		hosts := filepath.Join(t.TempDir(), "hosts")
		if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.244.9.9 querier.dns-test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			// The commands of the e2e framework's probes, as they call them.
			for _, argv := range [][]string{
				{"sh", "-c", "echo hostName | nc -v -t -w 2 127.0.0.1 9 || true; command -v nc"},
				{"curl", "--version"},
				{"dig", "-v"},
				{"getent", "hosts", "querier.dns-test"},
				{"bash", "-c", "seq 1 2 | awk '{s+=$1} END {print s}'"},
			} {
				if out := r.run(ctx, t, opts{mounts: []string{hosts + ":/etc/hosts:ro"}}, argv...); strings.TrimSpace(out) == "" {
					t.Errorf("%s printed nothing", strings.Join(argv, " "))
				}
			}
		})
	}
	t.Run("agnhost default command", func(t *testing.T) { testAgnhostPauses(ctx, t, c, archiveTag(t, archives["agnhost"])) })
}

// A container that names no command runs agnhost pause, as upstream's
// image's CMD says (the network-policy-api suite's clients rely on it).
func testAgnhostPauses(ctx context.Context, t *testing.T, c *containerd, tag string) {
	c.ctr(ctx, t, "run", "-d", tag, "pauses")
	defer c.ctr(context.Background(), t, "task", "kill", "-s", "SIGKILL", "pauses")
	pids := strings.Fields(c.ctr(ctx, t, "task", "ps", "pauses"))
	if len(pids) < 3 {
		t.Fatalf("ctr task ps pauses: %q", pids)
	}
	cmdline, err := os.ReadFile("/proc/" + pids[2] + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "); got != "/agnhost pause" {
		t.Errorf("the container without a command runs %q, want /agnhost pause", got)
	}
}
