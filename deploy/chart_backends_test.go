package deploy

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"
)

// The chart gives a backend what it needs beyond NET_ADMIN and NET_RAW,
// and only that backend: the TUN device to udp and WireGuard (userspace
// where the kernel has none), SYS_ADMIN to ipsec (charon's mount
// namespace) and TUN for its userspace ESP. flanneld refuses to start without them
// (internal/preflight).
func TestChartBackendSettings(t *testing.T) {
	bin := helmBinary(t)
	for _, tc := range []struct {
		backend  string
		tun      bool
		sysAdmin bool
	}{
		{"vxlan", false, false}, {"host-gw", false, false}, {"ipip", false, false},
		{"udp", true, false}, {"wireguard", true, false}, {"ipsec", true, true},
	} {
		spec := podSpec(t, renderChart(t, bin, "flannel.backend="+tc.backend))
		c := container(t, spec, "kube-flannel")
		if got := tunVolume(spec, c); got != tc.tun {
			t.Errorf("backend %s: TUN device mounted = %v, want %v", tc.backend, got, tc.tun)
		}
		want := []corev1.Capability{"NET_ADMIN", "NET_RAW"}
		if tc.sysAdmin {
			want = append(want, "SYS_ADMIN")
		}
		if got := c.SecurityContext.Capabilities.Add; !slices.Equal(got, want) {
			t.Errorf("backend %s: capabilities %v, want %v", tc.backend, got, want)
		}
		if p := c.SecurityContext.Privileged; p == nil || *p {
			t.Errorf("backend %s: privileged %v, want false", tc.backend, p)
		}
	}
}

// tunVolume reports whether spec has the volume "tun" (hostPath
// /dev/net/tun, type CharDevice) mounted at /dev/net/tun in c, failing
// nothing: a half-present one counts as absent.
func tunVolume(spec corev1.PodSpec, c corev1.Container) bool {
	vol := slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == "tun" && v.HostPath != nil && v.HostPath.Path == "/dev/net/tun" &&
			v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathCharDev
	})
	mount := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "tun" && m.MountPath == "/dev/net/tun"
	})
	return vol && mount
}

// The manifest with deploy/patches/<file> applied as kubectl applies it (a
// strategic merge) is exactly what the chart renders for the backend: the
// patches INSTALL.md gives the operator are the chart's settings.
func TestPatchesGiveTheManifestTheChartsBackendSettings(t *testing.T) {
	bin := helmBinary(t)
	const ds = "DaemonSet/kube-flannel/kube-flannel-ds"
	manifest := byKey(t, loadManifest(t))[ds]
	for _, c := range []struct{ set, patch string }{
		{"flannel.backend=udp", "tun.yaml"}, {"flannel.backend=wireguard", "tun.yaml"}, {"flannel.backend=ipsec", "ipsec.yaml"},
		{"flannel.datapath=ebpf", "ebpf.yaml"},
	} {
		chart := byKey(t, renderChartArgs(t, bin, chartDir, "-n", "kube-system", "-f", valuesFile("manifest"), "--set", c.set))[ds]
		patched := applyPatch(t, manifest, filepath.Join("patches", c.patch))
		// kubectl puts merged list items first, the chart last: the order
		// of volumes and mounts means nothing.
		byName := cmpopts.SortSlices(func(a, b any) bool { return nameOf(a) < nameOf(b) })
		if diff := cmp.Diff(chart, patched, byName); diff != "" {
			t.Errorf("%s: chart (-) vs manifest + patches/%s (+):\n%s", c.set, c.patch, diff)
		}
	}
}

// flannel.datapath=ebpf puts "Datapath": "ebpf" into the Backend and
// gives flanneld BPF and PERFMON, which loading the fast path's programs
// needs (internal/preflight refuses to start without them); a backend
// without a fast path fails the render.
func TestChartDatapathEBPF(t *testing.T) {
	bin := helmBinary(t)
	for _, backend := range []string{"host-gw", "vxlan"} {
		sets := []string{"flannel.backend=" + backend, "flannel.datapath=ebpf"}
		if got := backendOf(t, bin, sets...); got["Datapath"] != "ebpf" {
			t.Errorf("%s: Backend %v has no \"Datapath\": \"ebpf\"", backend, got)
		}
		c := container(t, podSpec(t, renderChart(t, bin, sets...)), "kube-flannel")
		if got, want := c.SecurityContext.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW", "BPF", "PERFMON"}; !slices.Equal(got, want) {
			t.Errorf("%s: capabilities %v, want %v", backend, got, want)
		}
	}
	if _, ok := backendOf(t, bin)["Datapath"]; ok {
		t.Errorf("the default Backend has a Datapath key; upstream's has none")
	}
	_, err := helm(t, bin, "template", "flannel", chartDir, "--set", "flannel.backend=udp", "--set", "flannel.datapath=ebpf")
	if err == nil || !strings.Contains(err.Error(), "host-gw or vxlan") {
		t.Errorf("flannel.backend=udp with flannel.datapath=ebpf: %v, want a failed render naming host-gw or vxlan", err)
	}
}

func nameOf(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["name"].(string)
	return s
}

func applyPatch(t *testing.T, obj map[string]any, path string) map[string]any {
	t.Helper()
	var patch map[string]any
	if err := yaml.Unmarshal(readFile(t, path), &patch); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	orig, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	pj, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	out, err := strategicpatch.StrategicMergePatch(orig, pj, appsv1.DaemonSet{})
	if err != nil {
		t.Fatalf("apply %s: %v", path, err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
