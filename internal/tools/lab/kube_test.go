package lab

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
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
	out, err := flannelManifest([]byte(in), "example.org/flannel:lab", &KubeSpec{}, "host-gw")
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
	if _, err := flannelManifest([]byte("kind: ConfigMap\n"), "x:1", &KubeSpec{}, "vxlan"); err == nil {
		t.Error("a manifest without image lines was accepted")
	}
}

// Every option edits the shipped manifest as an operator would, and the
// result still decodes into the DaemonSet and net-conf.json flanneld reads.
func TestFlannelManifestOptions(t *testing.T) {
	raw, err := os.ReadFile("../../../deploy/kube-flannel.yml")
	if err != nil {
		t.Fatal(err)
	}
	k := &KubeSpec{NetworkPolicy: true, NFTables: true, DualStack: true}
	out, err := flannelManifest(raw, "example.org/flannel:lab", k, "udp")
	if err != nil {
		t.Fatal(err)
	}
	ds, conf := decodeManifest(t, out)
	var nc struct {
		Network, IPv6Network string
		EnableIPv6           bool
		EnableNFTables       bool
		Backend              struct{ Type string }
	}
	if err := json.Unmarshal([]byte(conf), &nc); err != nil {
		t.Fatalf("net-conf.json %q: %v", conf, err)
	}
	if nc.Backend.Type != "udp" || !nc.EnableNFTables || !nc.EnableIPv6 || nc.IPv6Network != kubeClusterCIDR6 || nc.Network != kubeClusterCIDR {
		t.Errorf("net-conf.json: %+v", nc)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--network-policy") {
		t.Errorf("args %q lack --network-policy", c.Args)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "tun" && m.MountPath == "/dev/net/tun" }) {
		t.Errorf("no /dev/net/tun mount: %+v", c.VolumeMounts)
	}
	if !slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == "tun" && v.HostPath != nil && v.HostPath.Path == "/dev/net/tun" && *v.HostPath.Type == corev1.HostPathCharDev
	}) {
		t.Errorf("no tun volume: %+v", ds.Spec.Template.Spec.Volumes)
	}
	if got := c.SecurityContext.Capabilities.Add; slices.Contains(got, "BPF") {
		t.Errorf("capabilities %v without --datapath ebpf", got)
	}
	// --datapath ebpf: the Backend's "Datapath" and deploy/patches/ebpf.yaml.
	out, err = flannelManifest(raw, "example.org/flannel:lab", &KubeSpec{EBPF: true}, "host-gw")
	if err != nil {
		t.Fatal(err)
	}
	ds, conf = decodeManifest(t, out)
	var eb struct {
		Backend struct{ Type, Datapath string }
	}
	if err := json.Unmarshal([]byte(conf), &eb); err != nil || eb.Backend.Type != "host-gw" || eb.Backend.Datapath != "ebpf" {
		t.Errorf("net-conf.json %q with --datapath ebpf: %+v %v", conf, eb, err)
	}
	if got, want := ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW", "BPF", "PERFMON"}; !slices.Equal(got, want) {
		t.Errorf("capabilities %v with --datapath ebpf, want %v", got, want)
	}
	// vxlan needs none of it.
	out, err = flannelManifest(raw, "example.org/flannel:lab", &KubeSpec{}, "vxlan")
	if err != nil {
		t.Fatal(err)
	}
	ds, _ = decodeManifest(t, out)
	if slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "tun" }) {
		t.Error("vxlan got a TUN device")
	}
}

func decodeManifest(t *testing.T, m []byte) (*appsv1.DaemonSet, string) {
	t.Helper()
	var ds *appsv1.DaemonSet
	var conf string
	for _, doc := range strings.Split(string(m), "\n---") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("decode %q: %v", doc, err)
		}
		switch meta.Kind {
		case "DaemonSet":
			ds = &appsv1.DaemonSet{}
			if err := yaml.UnmarshalStrict([]byte(doc), ds); err != nil {
				t.Fatal(err)
			}
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err := yaml.UnmarshalStrict([]byte(doc), &cm); err != nil {
				t.Fatal(err)
			}
			conf = cm.Data["net-conf.json"]
		}
	}
	if ds == nil || conf == "" {
		t.Fatal("no DaemonSet or net-conf.json in the manifest")
	}
	return ds, conf
}

func TestHelmValues(t *testing.T) {
	got := strings.Join(helmValues("example.org/flannel:v1", &KubeSpec{DualStack: true, NetworkPolicy: true}, "host-gw"), " ")
	for _, want := range []string{"flannel.image.repository=example.org/flannel", "flannel.image.tag=v1",
		"flannel.backend=host-gw", "netpol.enabled=true", "flannel.enableNFTables=false", "podCidrv6=" + kubeClusterCIDR6} {
		if !strings.Contains(got, "--set "+want) {
			t.Errorf("helm values %q lack %s", got, want)
		}
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
