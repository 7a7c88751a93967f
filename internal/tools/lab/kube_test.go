package lab

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCgroupMount(t *testing.T) {
	for line, want := range map[string]cgroupHierarchy{
		"31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu":                                  {Dir: "/sys/fs/cgroup/cpu", FSType: "cgroup", Opts: "cpu"},
		"39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd":                     {Dir: "/sys/fs/cgroup/systemd", FSType: "cgroup", Opts: "name=systemd"},
		"40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw":                                {Dir: "/sys/fs/cgroup/unified", FSType: "cgroup2"},
		"33 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct":                  {Dir: "/sys/fs/cgroup/cpu,cpuacct", FSType: "cgroup", Opts: "cpu,cpuacct"},
		"28 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot": {Dir: "/sys/fs/cgroup", FSType: "cgroup2", Opts: "nsdelegate,memory_recursiveprot"},
	} {
		got, ok := parseCgroupMount(line)
		if !ok || got != want {
			t.Errorf("%s:\n got %+v %v\nwant %+v", line, got, ok, want)
		}
	}
	for _, line := range []string{
		"30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
		"50 22 0:40 / /mnt/cg rw - cgroup cgroup rw,pids",
		"garbage",
	} {
		if h, ok := parseCgroupMount(line); ok {
			t.Errorf("%s: took it for %+v", line, h)
		}
	}
}

func TestFlannelManifest(t *testing.T) {
	in := `data:
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "Backend": {
        "Type": "vxlan"
      }
    }
spec:
  initContainers:
    - name: install-cni-plugin
      image: ghcr.io/flannelgo/flannel:v0.1.0
  containers:
    - image: ghcr.io/flannelgo/flannel:v0.1.0
      name: kube-flannel
`
	out, err := flannelManifest([]byte(in), "example.org/flannel:lab", "host-gw")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Contains(s, "ghcr.io") || strings.Count(s, "example.org/flannel:lab") != 2 {
		t.Errorf("images not replaced:\n%s", s)
	}
	if !strings.Contains(s, `"Type": "host-gw"`) {
		t.Errorf("backend not replaced:\n%s", s)
	}
	// Only image references and the backend change: same line count, same
	// other lines.
	if strings.Count(s, "\n") != strings.Count(in, "\n") || !strings.Contains(s, "name: kube-flannel") {
		t.Errorf("manifest otherwise changed:\n%s", s)
	}
	if _, err := flannelManifest([]byte("kind: ConfigMap\n"), "x:1", "vxlan"); err == nil {
		t.Error("a manifest without image lines was accepted")
	}
}

func TestImageRef(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ file, body, want string }{
		"docker": {"manifest.json", `[{"Config":"c.json","RepoTags":["ghcr.io/flannelgo/flannel:v0.1.0"],"Layers":[]}]`, "ghcr.io/flannelgo/flannel:v0.1.0"},
		"oci":    {"index.json", `{"schemaVersion":2,"manifests":[{"annotations":{"io.containerd.image.name":"ghcr.io/flannelgo/flannel:v0.1.0","org.opencontainers.image.ref.name":"v0.1.0"}}]}`, "ghcr.io/flannelgo/flannel:v0.1.0"},
	} {
		p := filepath.Join(dir, name+".tar")
		writeTar(t, p, map[string]string{"oci-layout": "{}", c.file: c.body})
		got, err := imageRef(p)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", name, got, err, c.want)
		}
	}
	p := filepath.Join(dir, "none.tar")
	writeTar(t, p, map[string]string{"x": "y"})
	if _, err := imageRef(p); err == nil {
		t.Error("an archive without a manifest was accepted")
	}
}

func writeTar(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestKubeSpecCheckNamesWhatIsMissing(t *testing.T) {
	k := &KubeSpec{KubeBinDir: t.TempDir(), ContainerdDir: t.TempDir(), ImageDir: t.TempDir(), Runc: "/nonexistent/runc"}
	k.fill("")
	err := k.check()
	if err == nil || !strings.Contains(err.Error(), "kubelet-v1.37.2") || !strings.Contains(err.Error(), "scripts/setup.sh") {
		t.Errorf("check: %v", err)
	}
}
