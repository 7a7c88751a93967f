//go:build image

// Package image builds flannel's container image with scripts/image.sh and
// runs it in a private containerd, as a node would: the programs run, the
// iptables wrapper picks the back end the host uses, install-conf replaces
// the conflist atomically, the init containers' commands work.
//
//	go test -tags image -count=1 -v ./test/image   (as root; scripts/image-test.sh)
//
// It needs runc and Debian's containerd, unpacked by
// scripts/install-containerd.sh (scripts/setup.sh runs it). The containerd
// it starts has its own root, state, socket and namespace under /tmp and
// is stopped, with anything it started, when the test ends.
package image

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

const (
	namespace = "flannel-image-test"
	version   = "v0.0.0-image-test"
)

func containerdDir() string {
	if d := os.Getenv("CONTAINERD_DIR"); d != "" {
		return d
	}
	return "/var/cache/flannel-go/containerd-debian"
}

func TestImage(t *testing.T) {
	bin := filepath.Join(containerdDir(), "usr", "bin")
	tbtest.NeedRoot(t, "apt-get", "dpkg-deb", "runc", filepath.Join(bin, "containerd"), filepath.Join(bin, "ctr"), filepath.Join(bin, "containerd-shim-runc-v2"))
	// Under go test's -timeout (20m in scripts/image-test.sh and test.sh),
	// so that the cleanup still runs when it expires.
	ctx := tbtest.Ctx(t, 15*time.Minute)

	tarPath := filepath.Join(t.TempDir(), "flannel-image.tar")
	start := time.Now()
	build := exec.CommandContext(ctx, "scripts/image.sh")
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "OUT="+tarPath, "VERSION="+version)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	st, err := os.Stat(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scripts/image.sh: %s in %v", mib(st.Size()), time.Since(start).Round(time.Second))
	tag := archiveTag(t, tarPath)

	c := startContainerd(ctx, t, bin)
	start = time.Now()
	c.ctr(ctx, t, "images", "import", tarPath)
	if out := c.ctr(ctx, t, "images", "ls", "-q"); !strings.Contains(out, tag) {
		t.Fatalf("ctr images import: %s is not among the images:\n%s", tag, out)
	}
	t.Logf("ctr images import %s: %v", tag, time.Since(start).Round(time.Millisecond))

	r := &runner{c: c, tag: tag}
	t.Run("own network namespace", func(t *testing.T) {
		// Everything below touches only the container's own tables.
		host, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(r.run(ctx, t, opts{}, "readlink", "/proc/self/ns/net")); got == host {
			t.Fatalf("the container shares the host's network namespace %s", host)
		}
	})
	if t.Failed() {
		return
	}
	t.Run("programs", func(t *testing.T) {
		for _, c := range []struct {
			argv []string
			want string
		}{
			{[]string{"/opt/bin/flanneld", "--version"}, version},
			{[]string{"nft", "--version"}, "nftables v"},
			{[]string{"ip", "-V"}, "iproute2"},
			{[]string{"wg", "--version"}, "wireguard-tools"},
			{[]string{"flannelctl", "--help"}, "doctor"},
			{[]string{"test", "-f", "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"}, ""},
		} {
			out := r.run(ctx, t, opts{}, c.argv...)
			if !strings.Contains(out, c.want) {
				t.Errorf("%s printed %q, want %q in it", strings.Join(c.argv, " "), out, c.want)
			} else if c.want != "" {
				t.Logf("  %s", strings.SplitN(strings.TrimSpace(out), "\n", 2)[0])
			}
		}
	})
	t.Run("charon", func(t *testing.T) { testCharon(ctx, t, r) })
	t.Run("iptables wrapper", func(t *testing.T) { testWrapper(ctx, t, r) })
	t.Run("install-conf", func(t *testing.T) { testInstallConf(ctx, t, r) })
	t.Run("install-cni-plugin", func(t *testing.T) { testCopyPlugin(ctx, t, r) })
	t.Run("mk-docker-opts", func(t *testing.T) { testDockerOpts(ctx, t, r) })
}

// testCharon starts strongSwan's charon as the ipsec backend does and asks
// it over VICI which plugins it loaded: those the backend's default
// proposal (aes128gcm16-sha256-prfsha256-ecp256) and its kernel
// programming need.
func testCharon(ctx context.Context, t *testing.T, r *runner) {
	script := `/usr/lib/ipsec/charon >/tmp/charon.log 2>&1 &
for i in $(seq 50); do [ -S /run/charon.vici ] && break; sleep 0.1; done
swanctl --stats; s=$?; kill $!; exit $s`
	out := r.run(ctx, t, opts{}, "sh", "-c", script)
	_, plugins, _ := strings.Cut(out, "loaded plugins:")
	have := strings.Fields(strings.SplitN(plugins, "\n", 2)[0])
	for _, p := range []string{"vici", "kernel-netlink", "socket-default", "openssl", "gcm", "aes", "sha2", "hmac", "nonce", "random"} {
		if !slices.Contains(have, p) {
			t.Errorf("charon did not load its %s plugin; swanctl --stats:\n%s", p, out)
		}
	}
}

// testWrapper runs `iptables --version` in fresh containers whose network
// namespace holds what a host would: nothing (nft), kube-proxy's marker
// chain in one back end, rules in one back end.
func testWrapper(ctx context.Context, t *testing.T, r *runner) {
	for _, c := range []struct {
		name, setup string
		env         []string
		want        string
	}{
		{"no rules", "", nil, "(nf_tables)"},
		{"marker in legacy", "iptables-legacy -t mangle -N KUBE-IPTABLES-HINT", nil, "(legacy)"},
		{"marker in nft beats more legacy rules",
			"iptables-legacy -A INPUT -j ACCEPT && iptables-legacy -A INPUT -j ACCEPT && iptables-nft -t mangle -N KUBE-IPTABLES-HINT", nil, "(nf_tables)"},
		{"only legacy rules", "iptables-legacy -A INPUT -j ACCEPT", nil, "(legacy)"},
		{"only nft rules", "iptables-nft -A INPUT -j ACCEPT", nil, "(nf_tables)"},
		{"IPTABLES_MODE", "", []string{"IPTABLES_MODE=legacy"}, "(legacy)"},
	} {
		script := "set -e\n"
		if c.setup != "" {
			script += c.setup + "\n"
		}
		// The choice, then the command, then the links it left: every
		// wrapped command now points at the chosen back end.
		script += "iptables-wrapper mode\niptables --version\nip6tables-restore --version\nreadlink /usr/sbin/iptables-save /usr/sbin/ip6tables\n"
		out := r.run(ctx, t, opts{env: c.env}, "sh", "-c", script)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		mode := "nft"
		if c.want == "(legacy)" {
			mode = "legacy"
		}
		if len(lines) != 5 || !strings.Contains(lines[1], c.want) || !strings.Contains(lines[2], c.want) ||
			lines[3] != "iptables-"+mode+"-save" || lines[4] != "ip6tables-"+mode {
			t.Errorf("%s: got\n%s\nwant iptables and ip6tables-restore %s, the links pointing at the %s commands", c.name, out, c.want, mode)
			continue
		}
		t.Logf("%s: %s; %s", c.name, lines[1], lines[0])
	}
	// Choosing creates no table in either back end (a legacy table listed
	// into existence would stay in the host's namespace for good).
	out := r.run(ctx, t, opts{}, "sh", "-c", "iptables-wrapper mode >/dev/null && nft list tables && cat /proc/net/ip_tables_names /proc/net/ip6_tables_names && echo end")
	if strings.TrimSpace(out) != "end" {
		t.Errorf("after iptables-wrapper mode the namespace holds tables:\n%s", out)
	}
}

// testInstallConf runs the manifest's install-cni step with upstream's
// /opt/bin/install-conf: the conflist is replaced by a rename (a reader
// holding the old file keeps it whole), with no temporary left behind.
func testInstallConf(ctx context.Context, t *testing.T, r *runner) {
	cfgDir, netDir := t.TempDir(), t.TempDir()
	conf := `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}` + "\n"
	if err := os.WriteFile(filepath.Join(cfgDir, "cni-conf.json"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(netDir, "10-flannel.conflist")
	if err := os.WriteFile(dst, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := inode(t, dst)
	old, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	r.run(ctx, t, opts{mounts: []string{cfgDir + ":/etc/kube-flannel:ro", netDir + ":/etc/cni/net.d:rw"}},
		"/opt/bin/install-conf", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist")
	got, err := os.ReadFile(dst)
	if err != nil || string(got) != conf {
		t.Fatalf("%s holds %q (%v), want the ConfigMap's cni-conf.json", dst, got, err)
	}
	if after := inode(t, dst); after == before {
		t.Errorf("%s kept inode %d: written in place, not replaced by a rename", dst, after)
	}
	if b, _ := io.ReadAll(old); string(b) != "old\n" {
		t.Errorf("a reader of the old conflist read %q", b)
	}
	ents, _ := os.ReadDir(netDir)
	if len(ents) != 1 {
		t.Errorf("%s holds %d entries, want only the conflist (no temporary file)", netDir, len(ents))
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("%s mode %v (%v), want the source's 0644", dst, st.Mode().Perm(), err)
	}
}

// testCopyPlugin runs the manifest's install-cni-plugin init container
// command; the copy on the host answers as flannel's CNI plugin.
func testCopyPlugin(ctx context.Context, t *testing.T, r *runner) {
	cniDir := t.TempDir()
	r.run(ctx, t, opts{mounts: []string{cniDir + ":/opt/cni/bin:rw"}}, "cp", "-f", "/flannel", "/opt/cni/bin/flannel")
	plugin := exec.CommandContext(ctx, filepath.Join(cniDir, "flannel"))
	plugin.Env = []string{"CNI_COMMAND=VERSION"}
	plugin.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
	out, err := plugin.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"supportedVersions"`) {
		t.Fatalf("CNI_COMMAND=VERSION %s/flannel: %v\n%s", cniDir, err, out)
	}
}

func testDockerOpts(ctx context.Context, t *testing.T, r *runner) {
	dir := t.TempDir()
	env := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if err := os.WriteFile(filepath.Join(dir, "subnet.env"), []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	r.run(ctx, t, opts{mounts: []string{dir + ":/run/flannel:rw"}},
		"/opt/bin/mk-docker-opts.sh", "-f", "/run/flannel/subnet.env", "-d", "/run/flannel/docker_opts.env")
	got, err := os.ReadFile(filepath.Join(dir, "docker_opts.env"))
	want := `DOCKER_OPT_BIP="--bip=10.244.7.1/24"
DOCKER_OPT_IPMASQ="--ip-masq=false"
DOCKER_OPT_MTU="--mtu=1450"
DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1450"
`
	if err != nil || string(got) != want {
		t.Errorf("docker_opts.env = %q (%v), want %q", got, err, want)
	}
}

// runner starts containers of the image, one per command, each in its own
// network namespace with CAP_NET_ADMIN (flanneld's capabilities in the
// manifest).
type runner struct {
	c   *containerd
	tag string
	n   int
}

// opts are a container's extra environment and bind mounts
// ("SRC:DST:ro" or "SRC:DST:rw").
type opts struct {
	env, mounts []string
}

func (r *runner) run(ctx context.Context, t *testing.T, o opts, argv ...string) string {
	t.Helper()
	r.n++
	args := []string{"run", "--rm", "--cap-add", "CAP_NET_ADMIN", "--cap-add", "CAP_NET_RAW"}
	for _, e := range o.env {
		args = append(args, "--env", e)
	}
	for _, m := range o.mounts {
		f := strings.Split(m, ":")
		args = append(args, "--mount", fmt.Sprintf("type=bind,src=%s,dst=%s,options=rbind:%s", f[0], f[1], f[2]))
	}
	args = append(args, r.tag, fmt.Sprintf("t%d", r.n))
	args = append(args, argv...)
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	out := r.c.ctr(rctx, t, args...)
	t.Logf("%s: %v", strings.Join(argv, " "), time.Since(start).Round(time.Millisecond))
	return out
}

// containerd is a private containerd: its own root, state, sockets and opt
// directory under one temporary directory, the CRI plugin off, and ctr
// confined to one namespace.
type containerd struct {
	dir, sock, ctrBin string
	cmd               *exec.Cmd
}

func startContainerd(ctx context.Context, t *testing.T, bin string) *containerd {
	dir, err := os.MkdirTemp("", "flannel-image-test.")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), ctrBin: filepath.Join(bin, "ctr")}
	t.Cleanup(func() { removeTree(t, dir) })
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	// Not CommandContext: the cleanup stops it by its pid, in order.
	c.cmd = exec.Command(filepath.Join(bin, "containerd"), "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	// The shim it starts finds itself and runc on PATH.
	c.cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	// Should the test binary die before its cleanup (a panic), containerd
	// goes with it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		c.stop(t)
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("containerd log:\n%s", tail(string(b), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, c.ctrBin, "--address", c.sock, "version").CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30s: %v\n%s", c.sock, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c
}

func (c *containerd) ctr(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, c.ctrBin, append([]string{"--address", c.sock, "--namespace", namespace}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// stop removes what is left in the namespace, stops containerd by its pid,
// then any shim of this containerd that outlived it, found by the pid files
// under its state directory.
func (c *containerd) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctr := func(args ...string) string {
		out, _ := exec.CommandContext(ctx, c.ctrBin, append([]string{"--address", c.sock, "--namespace", namespace}, args...)...).Output()
		return string(out)
	}
	for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
		ctr("tasks", "kill", "-s", "SIGKILL", id)
		ctr("tasks", "delete", "-f", id)
	}
	for _, id := range strings.Fields(ctr("containers", "ls", "-q")) {
		ctr("containers", "delete", id)
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("containerd (pid %d) did not stop within 15s of SIGTERM; killing it", c.cmd.Process.Pid)
		_ = c.cmd.Process.Kill()
		<-done
	}
	pidFiles, _ := filepath.Glob(filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", namespace, "*", "shim.pid"))
	for _, f := range pidFiles {
		b, err := os.ReadFile(f)
		pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || perr != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), "containerd-shim") && strings.Contains(string(cmdline), c.sock) {
			t.Logf("stopping a leftover shim, pid %d", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeTree unmounts whatever is still mounted under dir (a snapshot of a
// container that did not end), deepest first, then removes dir.
func removeTree(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err == nil {
		var mounts []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
				mounts = append(mounts, fields[4])
			}
		}
		f.Close()
		for i := len(mounts) - 1; i >= 0; i-- {
			if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", mounts[i], err)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove %s: %v", dir, err)
	}
}

// archiveTag reads the image's name from the docker-archive's manifest.json.
func archiveTag(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no manifest.json: %v", path, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil || len(m) != 1 || len(m[0].RepoTags) != 1 {
			t.Fatalf("%s: manifest.json %+v (%v), want one image with one tag", path, m, err)
		}
		return m[0].RepoTags[0]
	}
}

func inode(t *testing.T, path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..")
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
