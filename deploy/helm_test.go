package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/flannelgo/flannel/internal/config"
)

// helmBinary returns a helm CLI, building the pinned one with
// scripts/install-helm.sh when needed (minutes the first time, instant
// afterwards thanks to its stamp). A failed install fails the test.
func helmBinary(t *testing.T) string {
	t.Helper()
	budget := 20 * time.Minute
	if d, ok := t.Deadline(); ok {
		// Leave time for the tests themselves and for a clean report.
		budget = min(budget, time.Until(d)-3*time.Minute)
	}
	path, err := installHelm(budget)
	if err != nil {
		// An install failure fails the run; it is never a skip, nor hidden
		// by another helm that happens to be in PATH.
		t.Fatalf("helm could not be installed: %v (scripts/install-helm.sh)", err)
	}
	return path
}

// installHelm runs scripts/install-helm.sh within budget. The script and
// the go build it starts run in a process group of their own, so running
// out of time stops the whole build, not just the shell.
func installHelm(budget time.Duration) (string, error) {
	if budget < time.Minute {
		return "", fmt.Errorf("only %s left before the test deadline, too little to build helm", budget.Round(time.Second))
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "install-helm.sh"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/install-helm.sh (budget %s): %w\n%s", budget.Round(time.Second), err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// helm runs the helm CLI with its config, cache and data kept in a
// temporary directory, so tests neither read nor change the user's.
func helm(t *testing.T, bin string, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, &helmError{args: args, err: err, stderr: stderr.String(), stdout: string(out)}
	}
	return out, nil
}

type helmError struct {
	args           []string
	err            error
	stderr, stdout string
}

func (e *helmError) Error() string {
	return "helm " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + e.stdout + e.stderr
}

// renderChart returns the objects `helm template` renders with setArgs
// (each "key=value", passed as --set).
func renderChart(t *testing.T, bin string, setArgs ...string) []object {
	t.Helper()
	args := []string{"template", "flannel", chartDir}
	for _, s := range setArgs {
		args = append(args, "--set", s)
	}
	out, err := helm(t, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStream(out)
	if err != nil {
		t.Fatalf("helm template output: %v\n%s", err, out)
	}
	return objs
}

func TestHelmLint(t *testing.T) {
	bin := helmBinary(t)
	for name, sets := range map[string][]string{
		"defaults":   nil,
		"dual-stack": {"podCidrv6=fd00:10:244::/56"},
		"options": {"flannel.backendPort=4789", "flannel.vni=4096", "flannel.directRouting=true",
			"flannel.mtu=1400", "flannel.enableNFTables=true", "flannel.healthzPort=0"},
	} {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			for _, s := range sets {
				args = append(args, "--set", s)
			}
			out, err := helm(t, bin, args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", out)
		})
	}
}

func TestChartDefaultsRenderTheManifest(t *testing.T) {
	bin := helmBinary(t)
	want := byKey(t, loadManifest(t))
	got := byKey(t, renderChart(t, bin))
	if diff := cmp.Diff(sortedKeys(want), sortedKeys(got)); diff != "" {
		t.Fatalf("objects: manifest (-) vs chart (+):\n%s", diff)
	}
	for k, w := range want {
		if diff := cmp.Diff(w, got[k]); diff != "" {
			t.Errorf("%s differs: manifest (-) vs chart (+):\n%s", k, diff)
		}
	}
}

func byKey(t *testing.T, objs []object) map[string]map[string]any {
	t.Helper()
	m := map[string]map[string]any{}
	for _, o := range objs {
		n, err := normalise(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := m[o.key()]; dup {
			t.Fatalf("%s appears twice", o.key())
		}
		m[o.key()] = n
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// renderedNetConf parses the chart's net-conf.json with flanneld's parser
// and also returns it raw, for keys the parser leaves to the backend.
func renderedNetConf(t *testing.T, objs []object) (*config.Config, map[string]any) {
	t.Helper()
	data := configData(t, find(t, objs, "ConfigMap", "kube-flannel-cfg"), "net-conf.json")
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("flanneld refuses the rendered net-conf.json: %v\n%s", err, data)
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	return cfg, raw
}

func TestChartDualStackAndIPv6Only(t *testing.T) {
	bin := helmBinary(t)
	v6 := netip.MustParsePrefix("fd00:10:244::/56")

	cfg, _ := renderedNetConf(t, renderChart(t, bin, "podCidrv6="+v6.String()))
	if !cfg.EnableIPv4 || !cfg.EnableIPv6 || cfg.IPv6Network != v6 || cfg.Network != netip.MustParsePrefix("10.244.0.0/16") {
		t.Errorf("dual stack: got %+v", cfg)
	}

	cfg, _ = renderedNetConf(t, renderChart(t, bin, "podCidr=", "podCidrv6="+v6.String()))
	if cfg.EnableIPv4 || !cfg.EnableIPv6 || cfg.IPv6Network != v6 {
		t.Errorf("IPv6 only: got %+v", cfg)
	}

	_, err := helm(t, bin, "template", "flannel", chartDir, "--set", "podCidr=")
	if err == nil || !strings.Contains(err.Error(), "set podCidr (IPv4), podCidrv6 (IPv6) or both") {
		t.Errorf("no pod network at all: want a clear refusal, got %v", err)
	}
}

func TestChartBackendOptions(t *testing.T) {
	bin := helmBinary(t)
	objs := renderChart(t, bin, "flannel.backendPort=4789", "flannel.vni=4096", "flannel.directRouting=true",
		"flannel.mtu=1400", "flannel.enableNFTables=true", "podCidr=10.10.0.0/16")
	cfg, raw := renderedNetConf(t, objs)
	if !cfg.EnableNFTables || cfg.BackendType != "vxlan" || cfg.Network != netip.MustParsePrefix("10.10.0.0/16") {
		t.Errorf("config = %+v", cfg)
	}
	want := map[string]any{"Type": "vxlan", "Port": 4789.0, "VNI": 4096.0, "DirectRouting": true, "MTU": 1400.0}
	if diff := cmp.Diff(want, raw["Backend"]); diff != "" {
		t.Errorf("Backend (-want +got):\n%s", diff)
	}

	// Another backend type, with a key the chart has no value for.
	_, raw = renderedNetConf(t, renderChart(t, bin, "flannel.backend=wireguard", "flannel.extraBackendOptions.PersistentKeepaliveInterval=25"))
	want = map[string]any{"Type": "wireguard", "PersistentKeepaliveInterval": 25.0}
	if diff := cmp.Diff(want, raw["Backend"]); diff != "" {
		t.Errorf("wireguard Backend (-want +got):\n%s", diff)
	}
}

func TestChartHealthzPort(t *testing.T) {
	bin := helmBinary(t)
	checkDaemonSet(t, renderChart(t, bin, "flannel.healthzPort=9099"), 9099)

	var ds appsv1.DaemonSet
	decodeStrict(t, find(t, renderChart(t, bin, "flannel.healthzPort=0"), "DaemonSet", "kube-flannel-ds"), &ds)
	c := ds.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe != nil || c.LivenessProbe != nil || len(c.Ports) != 0 ||
		slices.ContainsFunc(c.Args, func(a string) bool { return flagName(a) == "healthz-port" }) {
		t.Errorf("healthzPort=0 must drop the port, the probes and --healthz-port: %+v", c)
	}

	if _, err := helm(t, bin, "template", "flannel", chartDir, "--set", "flannel.healthzPort=70000"); err == nil {
		t.Errorf("healthzPort=70000 was accepted; values.schema.json should refuse it")
	}
}

func TestChartImageArgsAndNamespace(t *testing.T) {
	bin := helmBinary(t)
	objs := renderChart(t, bin, "flannel.image.repository=registry.example/flannel", "flannel.image.tag=v9.9.9",
		"flannel.args={--ip-masq,--kube-subnet-mgr,--iface=eth1}", "namespace.name=net", "namespace.create=false")
	for _, o := range objs {
		if o.kind() == "Namespace" {
			t.Errorf("namespace.create=false still renders %s", o.key())
		}
		if ns := o.meta("namespace"); ns != "" && ns != "net" {
			t.Errorf("%s is not in namespace net", o.key())
		}
	}
	var ds appsv1.DaemonSet
	decodeStrict(t, find(t, objs, "DaemonSet", "kube-flannel-ds"), &ds)
	spec := ds.Spec.Template.Spec
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if c.Image != "registry.example/flannel:v9.9.9" {
			t.Errorf("container %s image %q", c.Name, c.Image)
		}
	}
	wantArgs := []string{"--ip-masq", "--kube-subnet-mgr", "--iface=eth1", "--healthz-port=10244"}
	if got := spec.Containers[0].Args; !slices.Equal(got, wantArgs) {
		t.Errorf("args %q, want %q", got, wantArgs)
	}
	binding := find(t, objs, "ClusterRoleBinding", "flannel")
	if !strings.Contains(string(binding.raw), "namespace: net") {
		t.Errorf("ClusterRoleBinding does not bind the ServiceAccount in namespace net:\n%s", binding.raw)
	}
}
