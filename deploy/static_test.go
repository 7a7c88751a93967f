package deploy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// flanneldFlags builds cmd/flanneld and returns the flag names its --help
// lists, so the kit can only pass flags the daemon really has.
func flanneldFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "flanneld")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goTool(), "build", "-o", bin, "./cmd/flanneld")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build flanneld: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "--help").Output()
	if err != nil {
		t.Fatalf("flanneld --help: %v", err)
	}
	flags := map[string]bool{}
	re := regexp.MustCompile(`^\s+-([a-z0-9][a-z0-9_-]*)`)
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			flags[m[1]] = true
		}
	}
	if !flags["kube-subnet-mgr"] || !flags["etcd-endpoints"] {
		t.Fatalf("could not read flanneld's flags from --help:\n%s", out)
	}
	return flags
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// flagName turns "--healthz-port=8081" into "healthz-port".
func flagName(arg string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name
}

func TestEveryFlagInTheKitExistsInFlanneld(t *testing.T) {
	flags := flanneldFlags(t)
	var args []string
	addArgs := func(objs []object) {
		var ds appsv1.DaemonSet
		decodeStrict(t, find(t, objs, "DaemonSet", "kube-flannel-ds"), &ds)
		for _, c := range ds.Spec.Template.Spec.Containers {
			args = append(args, c.Args...)
		}
	}
	addArgs(loadManifest(t))
	// The manifest with its --network-policy lines uncommented, and the
	// chart with every flag it can add.
	data, err := WithNetworkPolicy(readFile(t, manifestPath))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStream(data)
	if err != nil {
		t.Fatal(err)
	}
	addArgs(objs)
	addArgs(renderChart(t, helmBinary(t), "netpol.enabled=true", "flannel.antiSpoofing=false", "flannel.healthz.port=9099"))
	args = append(args, unitExecStartArgs(t)...)
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			t.Errorf("argument %q is not a flag: flanneld takes only flags", a)
			continue
		}
		if !flags[flagName(a)] {
			t.Errorf("argument %q names no flanneld flag", a)
		}
	}
	// FLANNELD_* variables documented in the unit file must map to flags.
	unit := readFile(t, "flanneld.service")
	for _, m := range regexp.MustCompile(`FLANNELD_([A-Z0-9_]+)=`).FindAllStringSubmatch(string(unit), -1) {
		name := strings.ToLower(strings.ReplaceAll(m[1], "_", "-"))
		if !flags[name] {
			t.Errorf("flanneld.service documents FLANNELD_%s, but flanneld has no --%s", m[1], name)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// unitFile parses a systemd unit into section -> key -> values (keys such
// as ExecStartPre may repeat).
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	units := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, path)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			units[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			units[section][k] = append(units[section][k], v)
		}
	}
	return units
}

func unitExecStartArgs(t *testing.T) []string {
	t.Helper()
	exec := unitFile(t, "flanneld.service")["Service"]["ExecStart"]
	if len(exec) != 1 {
		t.Fatalf("flanneld.service: want one ExecStart, got %q", exec)
	}
	argv := strings.Fields(exec[0])
	if argv[0] != "/opt/bin/flanneld" {
		t.Fatalf("flanneld.service ExecStart runs %q, want /opt/bin/flanneld", argv[0])
	}
	return argv[1:]
}

func TestSystemdUnitRunsFlanneldInEtcdMode(t *testing.T) {
	u := unitFile(t, "flanneld.service")
	for _, section := range []string{"Unit", "Service", "Install"} {
		if u[section] == nil {
			t.Fatalf("flanneld.service has no [%s] section", section)
		}
	}
	args := unitExecStartArgs(t)
	if slices.ContainsFunc(args, func(a string) bool { return flagName(a) == "kube-subnet-mgr" }) {
		t.Errorf("flanneld.service is the etcd-mode unit but passes --kube-subnet-mgr")
	}
	if got := u["Service"]["EnvironmentFile"]; !slices.Contains(got, "-/etc/default/flanneld") {
		t.Errorf("EnvironmentFile = %q, want optional -/etc/default/flanneld (FLANNELD_* settings)", got)
	}
	// flanneld sends READY=1 (as upstream): Type=notify makes systemd wait
	// for it before starting the units ordered after flanneld.
	if got := u["Service"]["Type"]; !slices.Equal(got, []string{"notify"}) {
		t.Errorf("Type = %q, want notify", got)
	}
	if got := u["Service"]["Restart"]; !slices.Equal(got, []string{"on-failure"}) {
		t.Errorf("Restart = %q, want on-failure", got)
	}
	if got := strings.Join(u["Unit"]["After"], " "); !strings.Contains(got, "network-online.target") {
		t.Errorf("After = %q, want network-online.target", got)
	}
	if got := u["Install"]["WantedBy"]; !slices.Equal(got, []string{"multi-user.target"}) {
		t.Errorf("WantedBy = %q, want multi-user.target", got)
	}
}

// dockerInstr is one Dockerfile instruction with its continuation lines
// joined.
type dockerInstr struct{ op, args string }

func dockerfile(t *testing.T) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	var cur strings.Builder
	for _, line := range strings.Split(string(readFile(t, "Dockerfile")), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		op, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstr{strings.ToUpper(op), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

// TestDockerfileBuildsWhatTheManifestRuns is a static check: images cannot
// be pulled here, so the Dockerfile is read, not built. It checks the
// multi-arch build arguments, the Go version, the programs built and the
// paths the manifest's containers rely on.
func TestDockerfileBuildsWhatTheManifestRuns(t *testing.T) {
	instrs := dockerfile(t)
	argDefaults := map[string]string{}
	var froms, copies, runs []string
	for _, in := range instrs {
		switch in.op {
		case "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			argDefaults[k] = v
		case "FROM":
			froms = append(froms, in.args)
		case "COPY":
			copies = append(copies, in.args)
		case "RUN":
			runs = append(runs, in.args)
		}
	}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return argDefaults[k] })
	}
	if len(froms) != 2 {
		t.Fatalf("want a two-stage build, got FROM %q", froms)
	}
	if got := expand(froms[0]); !strings.HasPrefix(got, "--platform=") || !strings.Contains(got, " golang:1.26 AS build") {
		t.Errorf("builder stage %q (expanded %q), want --platform=$BUILDPLATFORM golang:1.26 AS build", froms[0], got)
	}
	if got := expand(froms[1]); !strings.HasPrefix(got, "debian:") || !strings.HasSuffix(got, "-slim") {
		t.Errorf("final stage %q, want debian:<release>-slim (the packages scripts/image.sh unpacks)", got)
	}
	for _, a := range []string{"TARGETOS", "TARGETARCH"} {
		if _, ok := argDefaults[a]; !ok {
			t.Errorf("Dockerfile does not declare ARG %s (needed for multi-arch builds)", a)
		}
	}
	build := ""
	for _, r := range runs {
		if strings.Contains(r, "go build") {
			build = r
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "GOOS=${TARGETOS}", "GOARCH=${TARGETARCH}", "-o /out/"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build step %q lacks %s", build, want)
		}
	}
	root := repoRoot(t)
	for _, cmd := range []string{"flanneld", "flannel", "flannelctl", "install-conf"} {
		if !strings.Contains(build, "./cmd/"+cmd+" ") && !strings.HasSuffix(build, "./cmd/"+cmd) {
			t.Errorf("go build step does not build ./cmd/%s", cmd)
		}
		if _, err := os.Stat(filepath.Join(root, "cmd", cmd)); err != nil {
			t.Errorf("the Dockerfile builds ./cmd/%s, which does not exist in this tree: %v", cmd, err)
		}
	}
	for _, c := range []string{"--from=build /out/flanneld /opt/bin/flanneld", "--from=build /out/flannel /flannel"} {
		if !slices.Contains(copies, c) {
			t.Errorf("final stage lacks COPY %s (paths the manifest runs); COPY lines: %q", c, copies)
		}
	}
	apt := strings.Join(runs, " ")
	for _, pkg := range []string{"iptables", "nftables", "iproute2"} {
		if !regexp.MustCompile(`apt-get install .*\b` + pkg + `\b`).MatchString(apt) {
			t.Errorf("final stage does not install %s", pkg)
		}
	}
}

// TestFlanneldCrossCompilesAsTheDockerfileDoes runs the Dockerfile's build
// step for another architecture without Docker, proving the image's
// programs build with CGO off for arm64.
func TestFlanneldCrossCompilesAsTheDockerfileDoes(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: cross-compiles three programs for arm64")
	}
	var pkgs []string
	for _, cmd := range []string{"flanneld", "flannel", "flannelctl", "install-conf"} {
		if _, err := os.Stat(filepath.Join(repoRoot(t), "cmd", cmd)); err == nil {
			pkgs = append(pkgs, "./cmd/"+cmd)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := t.TempDir()
	build := exec.CommandContext(ctx, goTool(), append([]string{"build", "-trimpath", "-tags", "nodeimage", "-o", out + "/"}, pkgs...)...)
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build %v: %v\n%s", pkgs, err, b)
	}
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(out, filepath.Base(p))); err != nil {
			t.Errorf("arm64 %s not built: %v", p, err)
		}
	}
}

// TestSystemdUnitVerifies runs systemd's own checker on the unit, with the
// daemon's path pointed at a binary that exists here.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		tbtest.Unavailable(t, "systemd-analyze not installed (Debian package systemd, scripts/setup.sh installs it)")
	}
	unit := strings.ReplaceAll(string(readFile(t, "flanneld.service")), "/opt/bin/flanneld", "/bin/true")
	path := filepath.Join(t.TempDir(), "flanneld.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// verify exits 0 on unknown keys and unparsable values, only warning
	// about them: any output is a finding.
	out, err := exec.CommandContext(ctx, analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify flanneld.service: %v\n%s", err, out)
	}
}
