package testbed

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/vishvananda/netlink"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "needs root: creates network namespaces")
	}
	for _, bin := range []string{"ip", "ping"} {
		if _, err := exec.LookPath(bin); err != nil {
			unavailable(t, "needs %s in PATH: %v", bin, err)
		}
	}
}

// unavailable is tbtest.Unavailable, which this package's own tests cannot
// import (tbtest imports testbed): a failure in CI, a skip elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run in CI: "+format, args...)
	}
	t.Skipf(format, args...)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newTestbed builds a testbed and removes it at the end of the test, checking
// that nothing is left.
func newTestbed(t *testing.T, opts Options) *Testbed {
	t.Helper()
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(t.TempDir(), "state")
	}
	ctx := testCtx(t)
	tb, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		tb.mu.Lock()
		var procs []*Proc
		for p := range tb.procs {
			procs = append(procs, p)
		}
		tb.mu.Unlock()
		if err := tb.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		assertNoNamespaces(t, opts.Name)
		for _, p := range procs {
			if p.Running() {
				t.Errorf("pid %d (%s) still running after Close", p.Pid, p.Argv[0])
			}
		}
	})
	return tb
}

func assertNoNamespaces(t *testing.T, name string) {
	t.Helper()
	left, err := ListNS(nsPrefix(name))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

func rootLinks(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func mustPing(t *testing.T, ctx context.Context, from string, to netip.Addr) {
	t.Helper()
	if err := Ping(ctx, from, to, 56, false); err != nil {
		t.Errorf("ping %s from %s: %v", to, from, err)
	}
}

func sysctl(t *testing.T, ns, key string) string {
	t.Helper()
	out, err := Exec(context.Background(), ns, "cat", filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func linkMTU(t *testing.T, ns, link string) int {
	t.Helper()
	var mtu int
	err := WithHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(link)
		if err != nil {
			return err
		}
		mtu = l.Attrs().MTU
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mtu
}

func TestNewThreeNodes(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	before := rootLinks(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	tb, err := New(ctx, Options{Name: "tbx1", Nodes: 3, StateDir: stateDir, UnderlayMTU: 1400})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = Remove("tbx1", stateDir) })

	want := []string{"fl-tbx1-hub", "fl-tbx1-n1", "fl-tbx1-n2", "fl-tbx1-n3"}
	got, _ := ListNS("fl-tbx1-")
	if strings.Join(sortPodsFirst(got), ",") != strings.Join(sortPodsFirst(want), ",") {
		t.Errorf("namespaces = %v, want %v", got, want)
	}
	if after := rootLinks(t); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("root namespace links changed: %v -> %v", before, after)
	}
	for i, n := range tb.Nodes {
		if want := netip.MustParseAddr("198.51.100.1" + string(rune('1'+i))); n.Addr != want {
			t.Errorf("node %d address %s, want %s", i+1, n.Addr, want)
		}
		if mtu := linkMTU(t, n.NS, "eth0"); mtu != 1400 {
			t.Errorf("%s eth0 MTU %d, want 1400", n.Name, mtu)
		}
		if v := sysctl(t, n.NS, "net.ipv4.ip_forward"); v != "1" {
			t.Errorf("%s ip_forward = %s", n.Name, v)
		}
		if out, _ := Exec(ctx, n.NS, "ip", "route", "show", "default"); len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("%s has a default route: %s", n.Name, out)
		}
	}
	// The testbed is an island: the host's uplink is unreachable from a node.
	if err := Ping(ctx, tb.Nodes[0].NS, netip.MustParseAddr("192.0.2.1"), 56, false); err == nil {
		t.Errorf("a node reaches the host's uplink gateway")
	}
	if v := sysctl(t, tb.Hub.NS, "net.ipv4.ip_forward"); v != "0" {
		t.Errorf("hub ip_forward = %s", v)
	}
	if mtu := linkMTU(t, tb.Hub.NS, "ul0"); mtu != 1400 {
		t.Errorf("hub ul0 MTU %d, want 1400", mtu)
	}
	mustPing(t, ctx, tb.Nodes[0].NS, tb.Nodes[1].Addr)
	mustPing(t, ctx, tb.Nodes[2].NS, tb.Nodes[0].Addr)
	mustPing(t, ctx, tb.Nodes[1].NS, tb.Hub.Addr)
	if err := Ping(ctx, tb.Nodes[0].NS, tb.Nodes[1].Addr, 1372, true); err != nil {
		t.Errorf("full-size ping: %v", err)
	}
	if err := Ping(ctx, tb.Nodes[0].NS, tb.Nodes[1].Addr, 1373, true); err == nil {
		t.Errorf("ping above the underlay MTU with DF set succeeded")
	}

	if err := tb.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertNoNamespaces(t, "tbx1")
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Errorf("state dir still there: %v", err)
	}
	if err := tb.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestTwoSegments(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tbseg", Nodes: 3, Segments: 2, IPv6: true})
	n1, n2, n3 := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
	if n2.Segment != 2 || n2.Addr != netip.MustParseAddr("203.0.113.12") {
		t.Fatalf("node 2 on segment %d at %s, want segment 2 at 203.0.113.12", n2.Segment, n2.Addr)
	}
	if n3.Segment != 1 || n3.Addr != netip.MustParseAddr("198.51.100.13") {
		t.Fatalf("node 3 on segment %d at %s", n3.Segment, n3.Addr)
	}
	if n2.Addr6 != netip.MustParseAddr("fd00:203:0:113::12") {
		t.Fatalf("node 2 IPv6 %s", n2.Addr6)
	}
	mustPing(t, ctx, n1.NS, n2.Addr)
	mustPing(t, ctx, n2.NS, n3.Addr)
	mustPing(t, ctx, n1.NS, tb.Hub.Addr)
	mustPing(t, ctx, n2.NS, tb.Hub.Addr)
	mustPing(t, ctx, n1.NS, n2.Addr6)
	mustPing(t, ctx, n2.NS, tb.Hub.Addr6)

	// Segment 2 is routed, not bridged: the path goes through the router.
	out, err := Exec(ctx, n1.NS, "ip", "route", "get", n2.Addr.String())
	if err != nil || !strings.Contains(string(out), "via 198.51.100.254") {
		t.Errorf("route from n1 to n2: %s %v", out, err)
	}

	o, err := tb.AddOutside(ctx)
	if err != nil {
		t.Fatalf("AddOutside: %v", err)
	}
	mustPing(t, ctx, n1.NS, o.Addr)
	mustPing(t, ctx, n2.NS, o.Addr)
	mustPing(t, ctx, n1.NS, o.Addr6)

	n4, err := tb.AddNode(ctx)
	if err != nil {
		t.Fatalf("AddNode: %v", err)
	}
	if n4.Segment != 2 || n4.Name != "n4" {
		t.Errorf("added node %s on segment %d", n4.Name, n4.Segment)
	}
	mustPing(t, ctx, n4.NS, n1.Addr)
	if err := tb.RemoveNode(ctx, n4); err != nil {
		t.Errorf("RemoveNode: %v", err)
	}
	if _, err := os.Stat(NSPath(n4.NS)); !os.IsNotExist(err) {
		t.Errorf("removed node's namespace still there")
	}
	// The same node joins again at once: its hub port name is free.
	again, err := tb.AddNode(ctx)
	if err != nil {
		t.Fatalf("AddNode after RemoveNode: %v", err)
	}
	if again.Name != "n4" {
		t.Errorf("rejoined as %s", again.Name)
	}
	mustPing(t, ctx, again.NS, n1.Addr)
}

func TestEtcd(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/usr/bin/etcd"); err != nil {
		unavailable(t, "needs /usr/bin/etcd: %v", err)
	}
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tbetc", Nodes: 2, Segments: 2})
	if err := tb.StartEtcd(ctx); err != nil {
		t.Fatalf("StartEtcd: %v", err)
	}
	if got := tb.EtcdEndpoint(); got != "http://198.51.100.1:2379" {
		t.Errorf("EtcdEndpoint = %s", got)
	}
	cli, err := tb.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/tb/k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	cli.Close()
	if err := tb.PutConfig(ctx, "", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`); err != nil {
		t.Fatalf("PutConfig: %v", err)
	}

	// Nodes, on both segments, reach etcd through the underlay.
	if _, err := exec.LookPath("etcdctl"); err == nil {
		for _, n := range tb.Nodes {
			out, err := Exec(ctx, n.NS, "etcdctl", "--endpoints="+tb.EtcdEndpoint(), "get", "--print-value-only", "/coreos.com/network/config")
			if err != nil || !strings.Contains(string(out), "10.244.0.0/16") {
				t.Errorf("etcdctl get from %s: %q %v", n.Name, out, err)
			}
		}
	}

	// etcd also listens on the hub's own loopback.
	if _, err := Exec(ctx, tb.Hub.NS, "etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"); err != nil {
		if _, lerr := exec.LookPath("etcdctl"); lerr == nil {
			t.Errorf("etcd on the hub's loopback: %v", err)
		}
	}

	if err := tb.StopEtcd(); err != nil {
		t.Fatalf("StopEtcd: %v", err)
	}
	if err := tb.StartEtcd(ctx); err != nil {
		t.Fatalf("StartEtcd again: %v", err)
	}
	cli, err = tb.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/tb/k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Errorf("after restart /tb/k = %v, want v1", resp.Kvs)
	}
}

func TestProcessCleanup(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	tb := newTestbed(t, Options{Name: "tbcln", Nodes: 1, StateDir: stateDir})
	n := tb.Nodes[0]

	// Stop: SIGTERM ends it.
	p, err := tb.StartProcess(ctx, n.NS, filepath.Join(n.Dir, "sleep.log"), "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if p.Running() {
		t.Errorf("still running after Stop")
	}

	p, err = tb.StartProcess(ctx, n.NS, filepath.Join(n.Dir, "sleep.log"), "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	// The process really is in the node's namespace.
	self, _ := os.Readlink("/proc/self/ns/net")
	waitFor(t, func() bool {
		got, _ := os.Readlink("/proc/" + itoa(p.Pid) + "/ns/net")
		return got != "" && got != self
	})

	if err := tb.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("pid %d survived Close", p.Pid)
	}
	assertNoNamespaces(t, "tbcln")
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Errorf("state dir still there")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAddPod(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tbpod", Nodes: 1})
	n := tb.Nodes[0]
	env := &subnetenv.Env{
		Network:     netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:      netip.MustParsePrefix("10.244.1.1/24"),
		IPv6Network: netip.MustParsePrefix("fd00:10:244::/56"),
		IPv6Subnet:  netip.MustParsePrefix("fd00:10:244:1::1/64"),
		MTU:         1450,
		IPMasq:      true,
	}
	if err := subnetenv.Write(n.SubnetFile, env); err != nil {
		t.Fatal(err)
	}
	p1, err := tb.AddPod(ctx, n)
	if err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	p2, err := tb.AddPod(ctx, n)
	if err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	if p1.NS != "fl-tbpod-n1-p1" || p1.IP != netip.MustParseAddr("10.244.1.2") || p2.IP != netip.MustParseAddr("10.244.1.3") {
		t.Errorf("pods %s %s, %s %s", p1.NS, p1.IP, p2.NS, p2.IP)
	}
	if p2.IP6 != netip.MustParseAddr("fd00:10:244:1::3") {
		t.Errorf("pod 2 IPv6 %s", p2.IP6)
	}
	for _, p := range []*Pod{p1, p2} {
		if mtu := linkMTU(t, p.NS, "eth0"); mtu != 1450 {
			t.Errorf("%s eth0 MTU %d, want 1450", p.Name, mtu)
		}
	}
	if mtu := linkMTU(t, n.NS, Bridge); mtu != 1450 {
		t.Errorf("cni0 MTU %d, want 1450", mtu)
	}
	mustPing(t, ctx, p1.NS, p2.IP)
	mustPing(t, ctx, p2.NS, p1.IP6)
	mustPing(t, ctx, p1.NS, netip.MustParseAddr("10.244.1.1"))
	if err := Ping(ctx, p1.NS, p2.IP, 1450-28, true); err != nil {
		t.Errorf("ping at pod MTU: %v", err)
	}
	if err := Ping(ctx, p1.NS, p2.IP, 1450-27, true); err == nil {
		t.Errorf("ping above pod MTU with DF succeeded")
	}

	if err := tb.RemovePod(ctx, p1); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	if _, err := os.Stat(NSPath(p1.NS)); !os.IsNotExist(err) {
		t.Errorf("pod namespace still there")
	}
	if len(n.Pods) != 1 || n.Pods[0] != p2 {
		t.Errorf("node pods after RemovePod: %v", n.Pods)
	}
	p3, err := tb.AddPod(ctx, n)
	if err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	mustPing(t, ctx, p3.NS, p2.IP)

	// Pods added concurrently, on a node whose bridge does not exist yet.
	n2, err := tb.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env.Subnet = netip.MustParsePrefix("10.244.2.1/24")
	env.IPv6Subnet = netip.Prefix{}
	if err := subnetenv.Write(n2.SubnetFile, env); err != nil {
		t.Fatal(err)
	}
	pods := make([]*Pod, 4)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() { pods[i], errs[i] = tb.AddPod(ctx, n2) })
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, p := range pods {
		if errs[i] != nil {
			t.Fatalf("concurrent AddPod: %v", errs[i])
		}
		if seen[p.IP] {
			t.Errorf("address %s given twice", p.IP)
		}
		seen[p.IP] = true
	}
	mustPing(t, ctx, pods[0].NS, pods[3].IP)
}

func TestAddPodWithoutSubnetFile(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tbpo2", Nodes: 1})
	if _, err := tb.AddPod(ctx, tb.Nodes[0]); err == nil || !strings.Contains(err.Error(), "subnet.env") {
		t.Fatalf("AddPod without subnet.env: %v", err)
	}
	if left, _ := ListNS("fl-tbpo2-n1-"); len(left) != 0 {
		t.Errorf("half-made pod left: %v", left)
	}
}

func TestCheckRangesFree(t *testing.T) {
	needRoot(t)
	if err := CheckRangesFree("tbchk"); err != nil {
		t.Fatalf("CheckRangesFree on a clean host: %v", err)
	}
	if err := CreateNS("fl-tbchk-n1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := DeleteNS("fl-tbchk-n1"); err != nil {
			t.Error(err)
		}
	})
	err := CheckRangesFree("tbchk")
	if err == nil || !strings.Contains(err.Error(), "flannelctl lab down --name tbchk") {
		t.Fatalf("CheckRangesFree with a leftover namespace: %v", err)
	}
	if _, err := New(testCtx(t), Options{Name: "tbchk", Nodes: 1, StateDir: t.TempDir()}); err == nil {
		t.Fatalf("New succeeded over a leftover namespace")
	}
	if _, err := os.Stat(NSPath("fl-tbchk-n1")); err != nil {
		t.Errorf("New removed a namespace it did not create: %v", err)
	}
}

// fakeFlanneld writes a shell script that behaves like flanneld as far as
// the testbed can tell: it logs its arguments, writes --subnet-file and
// keeps running (or exits with code 3 when fail is set).
func fakeFlanneld(t *testing.T, fail bool) string {
	t.Helper()
	body := `#!/bin/sh
echo "args: $*"
if [ -n "$FAKE_FAIL" ]; then echo "fake failure"; exit 3; fi
for a in "$@"; do case "$a" in --subnet-file=*) f="${a#--subnet-file=}";; esac; done
printf 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n' > "$f.tmp"
mv "$f.tmp" "$f"
while :; do sleep 1; done
`
	if fail {
		body = "#!/bin/sh\necho \"args: $*\"\necho fake failure\nexit 3\n"
	}
	path := filepath.Join(t.TempDir(), "flanneld")
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFlanneldLifecycle(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tbfl", Nodes: 2, FlanneldPath: fakeFlanneld(t, false)})
	n1, n2 := tb.Nodes[0], tb.Nodes[1]
	if err := tb.StartFlanneld(ctx, n1, "--ip-masq", "--iface=eth0"); err != nil {
		t.Fatalf("StartFlanneld: %v", err)
	}
	if err := tb.StartFlanneld(ctx, n1); err == nil {
		t.Errorf("second StartFlanneld on a running node succeeded")
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	env, err := tb.WaitSubnetFile(wctx, n1)
	if err != nil {
		t.Fatalf("WaitSubnetFile: %v", err)
	}
	if env.Subnet != netip.MustParsePrefix("10.244.7.1/24") || env.MTU != 1450 {
		t.Errorf("subnet.env = %+v", env)
	}
	log, _ := os.ReadFile(n1.LogFile)
	for _, want := range []string{"--etcd-endpoints=http://198.51.100.1:2379", "--iface=eth0", "--subnet-file=" + n1.SubnetFile, "-v=2", "--ip-masq"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("flanneld log lacks %q:\n%s", want, log)
		}
	}
	if err := tb.StopFlanneld(n1); err != nil {
		t.Errorf("StopFlanneld: %v", err)
	}
	if tb.Flanneld(n1).Running() {
		t.Errorf("flanneld still running after StopFlanneld")
	}

	// Restart, then crash it.
	if err := tb.StartFlanneld(ctx, n1); err != nil {
		t.Fatalf("StartFlanneld again: %v", err)
	}
	if err := tb.KillFlanneld(n1); err != nil {
		t.Errorf("KillFlanneld: %v", err)
	}
	if err := tb.Flanneld(n1).Wait(); err == nil {
		t.Errorf("killed flanneld exited cleanly")
	}

	// A flanneld that dies is reported at once, with its log.
	tb.Opts.FlanneldPath = fakeFlanneld(t, true)
	if err := tb.StartFlanneld(ctx, n2); err != nil {
		t.Fatalf("StartFlanneld: %v", err)
	}
	start := time.Now()
	_, err = tb.WaitSubnetFile(ctx, n2)
	if err == nil || !strings.Contains(err.Error(), "fake failure") {
		t.Errorf("WaitSubnetFile on a failing flanneld: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("WaitSubnetFile took %s to notice the exit", time.Since(start))
	}
}

func TestOptionsAndAddresses(t *testing.T) {
	for _, o := range []Options{{Name: ""}, {Name: "toolongname13"}, {Name: "Bad"}, {Name: "ok", Segments: 3}, {Name: "ok", UnderlayMTU: 100}, {Name: "ok", Nodes: 500}} {
		if err := o.setDefaults(); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	if o := (Options{Name: "tb1"}); o.setDefaults() == nil {
		t.Errorf("options without a state dir accepted")
	}
	o := Options{Name: "tb1", StateDir: "/tmp/x"}
	if err := o.setDefaults(); err != nil || o.UnderlayMTU != 1500 || o.Segments != 1 {
		t.Errorf("defaults: %+v %v", o, err)
	}
	if a := segmentAddr6(2, 254); a != netip.MustParseAddr("fd00:203:0:113::254") {
		t.Errorf("segmentAddr6 = %s", a)
	}
	if a, err := nthAddr(netip.MustParsePrefix("10.244.1.1/24"), 2); err != nil || a != netip.MustParseAddr("10.244.1.3") {
		t.Errorf("nthAddr = %s %v", a, err)
	}
	if _, err := nthAddr(netip.MustParsePrefix("10.244.1.1/24"), 254); err == nil {
		t.Errorf("nthAddr gave the broadcast address")
	}
	got := sortPodsFirst([]string{"fl-a-hub", "fl-a-n1", "fl-a-n1-p1", "fl-a-rtr"})
	if strings.Join(got, ",") != "fl-a-n1-p1,fl-a-n1,fl-a-rtr,fl-a-hub" {
		t.Errorf("sortPodsFirst = %v", got)
	}
}

func TestKeepState(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(stateDir, "not-the-testbeds")
	if err := os.WriteFile(mine, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{Name: "tbks", Nodes: 1, StateDir: stateDir, KeepState: true}
	tb, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove("tbks", stateDir) })
	n := tb.Nodes[0]
	if _, err := tb.StartProcess(ctx, n.NS, n.LogFile, "sleep", "30"); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.LogFile); err != nil {
		t.Errorf("KeepState: log gone: %v", err)
	}
	// A new testbed in the same directory starts afresh.
	opts.KeepState = false
	tb, err = New(ctx, opts)
	if err != nil {
		t.Fatalf("New over kept state: %v", err)
	}
	if _, err := os.Stat(n.LogFile); !os.IsNotExist(err) {
		t.Errorf("old log survived a new testbed")
	}
	if err := tb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("Close removed a file that is not the testbed's: %v", err)
	}
	if ents, _ := os.ReadDir(stateDir); len(ents) != 1 {
		t.Errorf("state dir after Close holds %d entries, want only the foreign file", len(ents))
	}
	assertNoNamespaces(t, "tbks")
}
