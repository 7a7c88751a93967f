package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// These tests drive the built flannelctl (with flanneld and the flannel
// CNI plugin next to it, as a release ships them) against real namespaces.
// Each lab gets its own --state-root, so nothing lands in /run.

// binDir holds flannelctl, flanneld and flannel, built once by TestMain
// for the root-only tests ("" when they will skip).
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "flannelctl-test-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			if err := buildBinaries(dir); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			binDir = dir
		}
		return m.Run()
	}()
	os.Exit(code)
}

func buildBinaries(dir string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(gobin, "build", "-o", dir+"/", ".", "../flanneld", "../flannel")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build flannelctl, flanneld, flannel: %v\n%s", err, out)
	}
	return nil
}

// labEnv is one lab under test.
type labEnv struct {
	t         *testing.T
	name      string
	stateRoot string
}

func needLab(t *testing.T, name string) *labEnv {
	t.Helper()
	tbtest.NeedRoot(t, "ip", "ping", "iptables",
		"/opt/cni/bin/bridge", "/opt/cni/bin/host-local", "/opt/cni/bin/portmap")
	if binDir == "" {
		t.Fatal("the binaries were not built (see TestMain)")
	}
	l := &labEnv{t: t, name: name, stateRoot: t.TempDir()}
	// Whatever happens, nothing of the lab outlives the test.
	t.Cleanup(func() {
		if _, err := os.Stat(l.stateDir()); err == nil {
			out, code := l.run(2*time.Minute, "down")
			if code != 0 {
				t.Errorf("cleanup: lab down exited %d:\n%s", code, out)
			}
		}
	})
	return l
}

func (l *labEnv) stateDir() string { return filepath.Join(l.stateRoot, l.name) }

// run runs `flannelctl lab CMD --name N --state-root R ARGS...` and returns
// its combined output and exit code.
func (l *labEnv) run(timeout time.Duration, cmd string, args ...string) (string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append([]string{"lab", cmd, "--name", l.name, "--state-root", l.stateRoot}, args...)
	c := exec.CommandContext(ctx, filepath.Join(binDir, "flannelctl"), argv...)
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		l.t.Fatalf("flannelctl %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out), 0
}

func (l *labEnv) up(args ...string) string {
	l.t.Helper()
	start := time.Now()
	out, code := l.run(5*time.Minute, "up", args...)
	if code != 0 {
		l.t.Fatalf("lab up %v exited %d:\n%s", args, code, out)
	}
	l.t.Logf("lab up %v took %s", args, time.Since(start).Round(100*time.Millisecond))
	return out
}

func (l *labEnv) check() string {
	l.t.Helper()
	out, code := l.run(5*time.Minute, "check")
	if code != 0 {
		l.t.Fatalf("lab check exited %d, want 0:\n%s", code, out)
	}
	if !regexp.MustCompile(`all \d+ checks passed`).MatchString(out) {
		l.t.Errorf("lab check output lacks the summary:\n%s", out)
	}
	return out
}

// downAndVerify runs `lab down` and proves that no namespace, link,
// process or state of the lab is left.
func (l *labEnv) downAndVerify(linksBefore map[string]bool) {
	l.t.Helper()
	pids := l.pids()
	if len(pids) == 0 {
		l.t.Errorf("no lab processes recorded in %s", l.stateDir())
	}
	out, code := l.run(2*time.Minute, "down")
	if code != 0 {
		l.t.Fatalf("lab down exited %d:\n%s", code, out)
	}
	if ns := l.namespaces(); len(ns) > 0 {
		l.t.Errorf("namespaces left after down: %v", ns)
	}
	for pid, what := range pids {
		if exitsSoon(pid) {
			continue
		}
		l.t.Errorf("%s (pid %d) still running after down", what, pid)
	}
	for _, name := range newLabLinks(l.t, linksBefore) {
		l.t.Errorf("link %s appeared in the root namespace", name)
	}
	if _, err := os.Stat(l.stateDir()); !os.IsNotExist(err) {
		l.t.Errorf("state dir %s still there after down (%v)", l.stateDir(), err)
	}
}

// pids lists the lab process and every process the testbed recorded.
func (l *labEnv) pids() map[int]string {
	out := map[int]string{}
	var lp struct{ Pid int }
	if data, err := os.ReadFile(filepath.Join(l.stateDir(), "labproc.json")); err == nil && json.Unmarshal(data, &lp) == nil {
		out[lp.Pid] = "lab process"
	}
	files, _ := filepath.Glob(filepath.Join(l.stateDir(), "pids", "*.json"))
	for _, f := range files {
		var p struct {
			Pid  int
			Role string
		}
		if data, err := os.ReadFile(f); err == nil && json.Unmarshal(data, &p) == nil {
			out[p.Pid] = p.Role
		}
	}
	return out
}

func (l *labEnv) namespaces() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "fl-"+l.name+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// exitsSoon allows a process a moment to finish exiting: one whose
// memory is already gone can look stopped to the code that waited for it.
func exitsSoon(pid int) bool {
	deadline := time.Now().Add(2 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// processAlive: a zombie waiting for its reaper has already exited.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.State != "Z" && st.State != "X"
}

func rootLinks(t *testing.T) map[string]bool {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range links {
		out[l.Attrs().Name] = true
	}
	return out
}

// labLinkRE matches the names the lab gives links inside its namespaces;
// one of them in the root namespace would be a leak.
var labLinkRE = regexp.MustCompile(`^(flannel\.\d+|flannel0|flannel-wg|cni0|ul\d|rtr\d|n\d+|vp\d+|veth[0-9a-f]+|out0)$`)

func newLabLinks(t *testing.T, before map[string]bool) []string {
	var out []string
	for name := range rootLinks(t) {
		if !before[name] && labLinkRE.MatchString(name) {
			out = append(out, name)
		}
	}
	return out
}

func TestLabVXLAN(t *testing.T) {
	t.Parallel()
	l := needLab(t, "tl1")
	links := rootLinks(t)
	out := l.up("--nodes", "3")
	for _, want := range []string{"etcd (embedded)", "n3-p1", "SUBNET", "10.244."} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up output lacks %q:\n%s", want, out)
		}
	}
	if again, code := l.run(time.Minute, "up"); code == 0 || !strings.Contains(again, "already up") {
		t.Errorf("second lab up: exit %d, want a refusal naming the running lab:\n%s", code, again)
	}
	check := l.check()
	for _, want := range []string{"fdb", "PERMANENT", "1422", "dev flannel.1"} {
		if !strings.Contains(check, want) {
			t.Errorf("lab check output lacks %q:\n%s", want, check)
		}
	}
	if st, code := l.run(time.Minute, "status"); code != 0 || !strings.Contains(st, "healthy") {
		t.Errorf("lab status exit %d:\n%s", code, st)
	}
	if _, code := l.run(time.Minute, "exec", "n2-p1", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("lab exec exit code %d, want the command's 7", code)
	}
	if addr, code := l.run(time.Minute, "exec", "n1-p1", "--", "ip", "-4", "-o", "addr", "show", "eth0"); code != 0 || !strings.Contains(addr, "10.244.") {
		t.Errorf("lab exec ip addr: exit %d\n%s", code, addr)
	}
	if out, code := l.run(time.Minute, "doctor", "n1"); code != 0 || !strings.Contains(out, "all 15 checks passed") {
		t.Errorf("lab doctor n1 on a healthy lab: exit %d\n%s", code, out)
	}
	// A firewall drop on VXLAN's port: the lab's flanneld heals kernel
	// drift by itself, but not a foreign firewall rule.
	for _, rule := range []string{"add table inet labtest", "add chain inet labtest in { type filter hook input priority 0; }",
		"add rule inet labtest in udp dport 8472 drop"} {
		if out, code := l.run(time.Minute, "exec", "n2", "--", "nft", rule); code != 0 {
			t.Fatalf("lab exec n2 nft %s: exit %d\n%s", rule, code, out)
		}
	}
	out, code := l.run(2*time.Minute, "doctor", "n2", "--output=json")
	if code != 1 || !strings.Contains(out, `"check": "peer reachability"`) || !strings.Contains(out, "UDP 8472") {
		t.Errorf("lab doctor n2 with UDP 8472 dropped: exit %d, want 1 naming the port\n%s", code, out)
	}
	l.downAndVerify(links)
}

func TestLabTwoSegments(t *testing.T) {
	t.Parallel()
	l := needLab(t, "tl2s")
	links := rootLinks(t)
	out := l.up("--nodes", "3", "--segments", "2")
	if !regexp.MustCompile(`\b203\.0\.113\.12\b`).MatchString(out) {
		t.Errorf("node 2 is not on segment 2:\n%s", out)
	}
	check := l.check()
	// The traced pair crosses the router.
	if !strings.Contains(check, "via 198.51.100.254 dev eth0") && !strings.Contains(check, "via 203.0.113.254 dev eth0") {
		t.Errorf("packet walk does not cross the router:\n%s", check)
	}
	l.downAndVerify(links)
}

func TestLabHostGW(t *testing.T) {
	t.Parallel()
	l := needLab(t, "tlhg")
	links := rootLinks(t)
	out, code := l.run(5*time.Minute, "up", "--nodes", "3", "--backend", "host-gw")
	if code != 0 {
		t.Fatalf("lab up --backend host-gw exited %d:\n%s", code, out)
	}
	check := l.check()
	// The node's route must go via the public IP of the very node that
	// holds the destination pod (n<i> is 198.51.100.1<i>), not any address
	// that merely starts alike.
	lease := regexp.MustCompile(`n(\d+)'s lease \S+: PublicIP (\S+), backend host-gw`).FindStringSubmatch(check)
	if lease == nil {
		t.Fatalf("host-gw walk names no destination lease:\n%s", check)
	}
	if want := "198.51.100.1" + lease[1]; lease[2] != want {
		t.Errorf("n%s's lease has PublicIP %s, want %s", lease[1], lease[2], want)
	}
	hop := regexp.MustCompile(`node n\d+ +route +\S+ via (\S+) dev eth0 +ok`).FindStringSubmatch(check)
	if hop == nil || hop[1] != lease[2] {
		t.Errorf("host-gw walk: node route %q, want one via %s dev eth0:\n%s", hop, lease[2], check)
	}
	if n := len(regexp.MustCompile(`(?m)^  n\d+ +n\d+-p\d+ \(\S+\) +kernel$`).FindAllString(check, -1)); n != 3 {
		t.Errorf("check shows %d pods on the kernel path, want all 3:\n%s", n, check)
	}
	l.downAndVerify(links)
}

// --datapath ebpf: every pod's host-side veth carries the fast path's
// program, and check says so pod by pod.
func TestLabEBPFDatapath(t *testing.T) {
	t.Parallel()
	l := needLab(t, "tleb")
	links := rootLinks(t)
	l.up("--nodes", "2", "--backend", "vxlan", "--datapath", "ebpf")
	check := l.check()
	if !strings.Contains(check, "data path per pod (net-conf.json asks for ebpf)") {
		t.Errorf("check has no data path section for ebpf:\n%s", check)
	}
	if n := len(regexp.MustCompile(`(?m)^  n\d+ +n\d+-p\d+ \(\S+\) +ebpf \((tcx|clsact)\)$`).FindAllString(check, -1)); n != 2 {
		t.Errorf("check shows %d pods on the eBPF path, want both:\n%s", n, check)
	}
	l.downAndVerify(links)
}

// udp and wireguard route the whole network into their own device and
// pick the peer inside it: the lab is ready when pods ping across nodes,
// and check judges the node's route into the device.
func TestLabTunnelBackends(t *testing.T) {
	for _, c := range []struct{ backend, name, dev, mtu string }{
		{"udp", "tlud", "flannel0", "1472"},
		{"wireguard", "tlwg", "flannel-wg", "1420"},
	} {
		t.Run(c.backend, func(t *testing.T) {
			t.Parallel()
			l := needLab(t, c.name)
			links := rootLinks(t)
			out := l.up("--nodes", "2", "--backend", c.backend)
			for _, want := range []string{"into " + c.dev, "data path: all 2 cross-node pairs answer pings through " + c.dev, "FLANNEL_MTU " + c.mtu} {
				if !strings.Contains(out, want) {
					t.Errorf("lab up --backend %s output lacks %q:\n%s", c.backend, want, out)
				}
			}
			check := l.check()
			if !regexp.MustCompile(`node n\d+ +route +10\.244\.\d+\.\d+ dev ` + c.dev + ` .*ok`).MatchString(check) {
				t.Errorf("packet walk does not show the node's route into %s:\n%s", c.dev, check)
			}
			l.downAndVerify(links)
		})
	}
}

// host-gw needs one L2 segment: across a router flanneld installs no
// route, the lab comes up with a warning, and check shows the hole.
func TestLabHostGWAcrossRouter(t *testing.T) {
	t.Parallel()
	l := needLab(t, "tlhgr")
	links := rootLinks(t)
	out, code := l.run(5*time.Minute, "up", "--nodes", "2", "--backend", "host-gw", "--segments", "2")
	if code != 0 || !strings.Contains(out, "WARNING: n1 has no route to") {
		t.Fatalf("lab up: exit %d, want 0 with a warning about n1's missing route:\n%s", code, out)
	}
	check, code := l.run(5*time.Minute, "check")
	if code == 0 || !strings.Contains(check, "MISMATCH, want a route to") || !strings.Contains(check, "ping n1-p1 -> n2-p1") {
		t.Errorf("lab check: exit %d, want the missing route and the failed ping:\n%s", code, check)
	}
	l.downAndVerify(links)
}

// The MTU war story: pods at 1500 on a 1500 underlay, where VXLAN leaves
// 1450. Everything pings; large packets across nodes do not arrive.
func TestLabPodMTUWarStory(t *testing.T) {
	t.Parallel()
	l := needLab(t, "tlmtu")
	links := rootLinks(t)
	l.up("--nodes", "2", "--pod-mtu", "1500", "--underlay-mtu", "1500")
	out, code := l.run(5*time.Minute, "check")
	if code == 0 {
		t.Fatalf("lab check passed with pod MTU 1500 over a 1450 overlay:\n%s", out)
	}
	for _, want := range []string{
		"payloads above 1422 bytes vanish",
		"the pod MTU (1500) exceeds the overlay MTU (1450",
		"FAIL: pod MTU 1500 > overlay MTU 1450",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lab check output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)n1-p1 -> n2-p1 +1500 +1450 +1422 +1422 `).MatchString(out) {
		t.Errorf("MTU table does not show the 1422 boundary for n1-p1 -> n2-p1:\n%s", out)
	}
	l.downAndVerify(links)
}

// `lab down` cleans up after a lab process that was killed: its flanneld
// processes, namespaces and state.
func TestLabDownAfterCrash(t *testing.T) {
	t.Parallel()
	l := needLab(t, "tlcr")
	links := rootLinks(t)
	l.up("--nodes", "2", "--pods-per-node", "1")
	pids := l.pids()
	for pid, what := range pids {
		if what == "lab process" {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for processAlive(pid) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	st, code := l.run(time.Minute, "status")
	if code == 0 || !strings.Contains(st, "GONE") {
		t.Errorf("lab status after the lab process was killed: exit %d, want non-zero and GONE:\n%s", code, st)
	}
	if out, code := l.run(time.Minute, "up"); code == 0 || !strings.Contains(out, "lab down") {
		t.Errorf("lab up over a crashed lab: exit %d, want advice to run lab down:\n%s", code, out)
	}
	l.downAndVerify(links)
	for pid, what := range pids {
		if !exitsSoon(pid) {
			t.Errorf("%s pid %d survived", what, pid)
		}
	}
}

func TestLabUsage(t *testing.T) {
	var out, errb strings.Builder
	if code := run([]string{"lab", "up", "--nodes", "2", "--name", "Bad-Name"}, &out, &errb); code == 0 {
		t.Errorf("bad lab name accepted")
	}
	if code := run([]string{"lab", "nosuch"}, &out, &errb); code != 2 {
		t.Errorf("unknown lab command: exit %d, want 2", code)
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Errorf("unknown command: exit %d: %s", code, errb.String())
	}
}
