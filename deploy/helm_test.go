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

// renderChart returns the objects `helm template` renders in release
// namespace kube-flannel with setArgs (each "key=value", passed as --set).
func renderChart(t *testing.T, bin string, setArgs ...string) []object {
	t.Helper()
	var args []string
	for _, s := range setArgs {
		args = append(args, "--set", s)
	}
	return renderChartArgs(t, bin, chartDir, args...)
}

// renderChartArgs renders chart in release namespace kube-flannel (as
// upstream's README installs it) with further helm arguments; a later
// "-n" overrides the namespace.
func renderChartArgs(t *testing.T, bin, chart string, args ...string) []object {
	t.Helper()
	out, err := helm(t, bin, append([]string{"template", "flannel", chart, "-n", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStream(out)
	if err != nil {
		t.Fatalf("helm template output: %v\n%s", err, out)
	}
	return objs
}

// valuesFile is the path of one of the values files in
// testdata/chart-values.
func valuesFile(name string) string { return filepath.Join("testdata", "chart-values", name+".yaml") }

// variants are the values files the chart is rendered with both here and,
// by scripts/chart-compare.sh, against upstream's chart ("" is the
// defaults).
var variants = []string{"", "vxlan", "wireguard", "netpol"}

func TestHelmLint(t *testing.T) {
	bin := helmBinary(t)
	for _, v := range append(slices.Clone(variants), "manifest") {
		t.Run("values="+v, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "-n", namespace}
			if v != "" {
				args = append(args, "-f", valuesFile(v))
			}
			if v == "manifest" {
				args = append(args, "-n", "kube-system")
			}
			out, err := helm(t, bin, args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", out)
		})
	}
}

// The chart's defaults are upstream's chart's; with the values where
// upstream's own manifest differs from its chart (testdata/chart-values/
// manifest.yaml) it renders exactly kube-flannel.yml.
func TestChartRendersTheManifest(t *testing.T) {
	bin := helmBinary(t)
	want := byKey(t, loadManifest(t))
	got := byKey(t, renderChartArgs(t, bin, chartDir, "-n", "kube-system", "-f", valuesFile("manifest")))
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

func daemonSet(t *testing.T, objs []object) appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	decodeStrict(t, find(t, objs, "DaemonSet", "kube-flannel-ds"), &ds)
	return ds
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

func TestChartHealthzPortZero(t *testing.T) {
	bin := helmBinary(t)
	c := daemonSet(t, renderChart(t, bin, "flannel.healthz.port=0")).Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe != nil || c.LivenessProbe != nil || len(c.Ports) != 0 ||
		slices.ContainsFunc(c.Args, func(a string) bool { return flagName(a) == "healthz-port" }) {
		t.Errorf("healthz.port=0 must drop the port, the probes and --healthz-port: %+v", c)
	}
	if _, err := helm(t, bin, "template", "flannel", chartDir, "--set", "flannel.healthz.port=70000"); err == nil {
		t.Errorf("healthz.port=70000 was accepted; values.schema.json should refuse it")
	}
}

// Objects go in the release's namespace, as upstream's chart puts them;
// namespace.create=true makes the chart own namespace.name instead, and
// refuses to own the release's own namespace (Helm could not store the
// release before creating it).
func TestChartNamespace(t *testing.T) {
	bin := helmBinary(t)
	checkNamespaces := func(objs []object, want string, wantNS bool) {
		t.Helper()
		var sawNS bool
		for _, o := range objs {
			if o.kind() == "Namespace" {
				sawNS = true
				if o.meta("name") != want {
					t.Errorf("renders %s, want namespace %s", o.key(), want)
				}
			}
			if ns := o.meta("namespace"); ns != "" && ns != want {
				t.Errorf("%s is not in namespace %s", o.key(), want)
			}
		}
		if sawNS != wantNS {
			t.Errorf("Namespace object rendered: %v, want %v", sawNS, wantNS)
		}
		binding := find(t, objs, "ClusterRoleBinding", "flannel")
		if !strings.Contains(string(binding.raw), "namespace: "+want) {
			t.Errorf("ClusterRoleBinding does not bind the ServiceAccount in namespace %s:\n%s", want, binding.raw)
		}
	}
	checkNamespaces(renderChartArgs(t, bin, chartDir, "-n", "net"), "net", false)
	checkNamespaces(renderChartArgs(t, bin, chartDir, "-n", "kube-system", "--set", "namespace.create=true", "--set", "namespace.name=net"), "net", true)

	_, err := helm(t, bin, "template", "flannel", chartDir, "-n", "kube-flannel", "--set", "namespace.create=true")
	if err == nil || !strings.Contains(err.Error(), "install the release into another namespace") {
		t.Errorf("namespace.create=true with the release in kube-flannel itself: want a refusal that says what to do, got %v", err)
	}
}
