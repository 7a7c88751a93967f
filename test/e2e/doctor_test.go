package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/offload"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/tools/doctor"
)

// doctorConfig leaves 7 subnets (10.244.1-7.0/24) so that a few extra
// leases push usage over 80 %, and asks for the checksum-offload fix.
const doctorConfig = `{"Network":"10.244.0.0/21","SubnetLen":24,"Backend":{"Type":"vxlan","DisableTxChecksumOffload":true}}`

// doctorArgs are the flanneld flags of the doctor cluster: rules are not
// re-applied during the test (so that a deleted rule stays deleted while
// doctor looks), health is served, and peers are probed every 2 s.
// Self-healing is off: the faults doctor must name would otherwise be
// repaired before it looks.
var doctorArgs = []string{"--ip-masq", "--iptables-resync=3600", "--healthz-port=10244", "--peer-probe-interval=2s", "--reconcile-interval=0"}

type doctorRun struct {
	code   int
	out    string
	checks map[string]doctor.Result
}

// runDoctor runs `flannelctl doctor --output json` inside node n.
func (c *cluster) runDoctor(t *testing.T, n *testbed.Node, extra ...string) doctorRun {
	t.Helper()
	ctx := testCtx(t, 2*time.Minute)
	argv := append([]string{"netns", "exec", n.NS, filepath.Join(bins.dir, "flannelctl"), "doctor",
		"--etcd-endpoints=" + c.EtcdEndpoint(), "--subnet-file=" + n.SubnetFile, "--healthz=127.0.0.1:10244",
		"--output=json", "--timeout=90s"}, extra...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := doctorRun{code: cmd.ProcessState.ExitCode(), out: stdout.String(), checks: map[string]doctor.Result{}}
	if r.code != 0 && r.code != 1 {
		t.Fatalf("flannelctl doctor on %s: %v (exit %d)\n%s%s", n.Name, err, r.code, stdout.String(), stderr.String())
	}
	if extraHas(extra, "--output=text") {
		return r
	}
	var rep struct {
		OK     bool
		Checks []doctor.Result
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("doctor JSON on %s: %v\n%s%s", n.Name, err, stdout.String(), stderr.String())
	}
	for _, ch := range rep.Checks {
		r.checks[ch.Check] = ch
	}
	if rep.OK != (r.code == 0) {
		t.Errorf("doctor JSON ok=%v but exit code %d", rep.OK, r.code)
	}
	return r
}

func extraHas(args []string, s string) bool {
	for _, a := range args {
		if a == s {
			return true
		}
	}
	return false
}

func (r doctorRun) problems() []string {
	var out []string
	for name, ch := range r.checks {
		if ch.Status == doctor.Problem {
			out = append(out, name+": "+ch.Summary+" "+strings.Join(ch.Evidence, "; "))
		}
	}
	return out
}

// requireProblem fails unless doctor exited 1 and check is a PROBLEM whose
// text holds every part and which carries a fix.
func requireProblem(t *testing.T, r doctorRun, check string, parts ...string) {
	t.Helper()
	ch, ok := r.checks[check]
	if r.code != 1 || !ok || ch.Status != doctor.Problem || ch.Fix == "" {
		t.Fatalf("want exit 1 and %q a PROBLEM with a fix; exit %d, got %+v\n%s", check, r.code, ch, r.out)
	}
	text := ch.Summary + "\n" + strings.Join(ch.Evidence, "\n") + "\n" + ch.Fix
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("check %q does not mention %q:\n%s", check, p, text)
		}
	}
	t.Logf("doctor names it: %s: %s\n  fix: %s", check, ch.Summary, ch.Fix)
}

// requireHealthy waits (doctor re-run) until every check passes.
func (c *cluster) requireHealthy(t *testing.T, n *testbed.Node, within time.Duration) {
	t.Helper()
	var r doctorRun
	eventually(t, within, "doctor on "+n.Name+" finds nothing", func() error {
		r = c.runDoctor(t, n)
		if r.code != 0 {
			return fmt.Errorf("exit %d: %v", r.code, r.problems())
		}
		return nil
	})
	for name, ch := range r.checks {
		if ch.Status == doctor.Problem {
			t.Errorf("exit 0 with %s a PROBLEM", name)
		}
	}
}

// nsRun runs a command in ns and fails the test if it fails.
func nsRun(t *testing.T, ns string, argv ...string) string {
	t.Helper()
	out, err := testbed.Exec(testCtx(t, 30*time.Second), ns, argv...)
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(argv, " "), ns, err, out)
	}
	return string(out)
}

// saveIPTables returns a function that restores ns's iptables as they are
// now.
func saveIPTables(t *testing.T, ns string) func() {
	t.Helper()
	saved := nsRun(t, ns, "iptables-save")
	return func() {
		cmd := exec.Command("ip", "netns", "exec", ns, "iptables-restore")
		cmd.Stdin = strings.NewReader(saved)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("restore iptables in %s: %v\n%s", ns, err, out)
		}
	}
}

// TestDoctor runs flannelctl doctor on a healthy 3-node VXLAN cluster
// (exit 0), then breaks one thing at a time and checks that doctor names
// it with its fix and exits 1, and that the per-peer metrics follow a
// blocked VXLAN port.
func TestDoctor(t *testing.T) {
	c := newCluster(t, "doc", clusterOpts{nodes: 3, config: doctorConfig})
	envs := c.start(c.Nodes, doctorArgs...)
	c.addPods(c.Nodes)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	free := freeSubnets(envs)[0] // a subnet no node holds: 10.244.<free>.0/24
	stale, foreign := fmt.Sprintf("10.244.%d.0", free), fmt.Sprintf("10.244.%d.1/24", free)
	c.requireHealthy(t, n1, 30*time.Second)
	text := c.runDoctor(t, n1, "--output=text")
	if text.code != 0 || !strings.Contains(text.out, "all 15 checks passed") {
		t.Errorf("text report: exit %d\n%s", text.code, text.out)
	}

	t.Run("blocked VXLAN port", func(t *testing.T) { c.blockedPort(t, n1, n2) })
	t.Run("FDB entry deleted, stale entry added", func(t *testing.T) {
		mac := vtepOf(t, n2)
		nsRun(t, n1.NS, "bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", n2.Addr.String())
		nsRun(t, n1.NS, "bridge", "fdb", "append", "0a:00:00:00:00:99", "dev", "flannel.1", "dst", "198.51.100.99", "self", "permanent")
		nsRun(t, n1.NS, "ip", "route", "add", stale+"/24", "via", stale, "dev", "flannel.1", "onlink")
		nsRun(t, n1.NS, "ip", "neigh", "add", stale, "lladdr", "0a:00:00:00:00:99", "dev", "flannel.1", "nud", "permanent")
		r := c.runDoctor(t, n1)
		requireProblem(t, r, "kernel state", "no FDB entry "+mac+" dst "+n2.Addr.String(), "stale FDB entry 0a:00:00:00:00:99",
			"stale route "+stale+"/24 via "+stale+" dev flannel.1 onlink", "stale neighbour "+stale+" lladdr 0a:00:00:00:00:99", "restart flanneld")
		nsRun(t, n1.NS, "ip", "neigh", "del", stale, "dev", "flannel.1")
		nsRun(t, n1.NS, "ip", "route", "del", stale+"/24", "dev", "flannel.1")
		nsRun(t, n1.NS, "bridge", "fdb", "del", "0a:00:00:00:00:99", "dev", "flannel.1", "dst", "198.51.100.99")
		nsRun(t, n1.NS, "bridge", "fdb", "append", mac, "dev", "flannel.1", "dst", n2.Addr.String(), "self", "permanent")
	})
	t.Run("cni0 address from another subnet", func(t *testing.T) {
		nsRun(t, n1.NS, "ip", "addr", "add", foreign, "dev", "cni0")
		r := c.runDoctor(t, n1)
		requireProblem(t, r, "cni0", "cni0 has "+foreign, "cni0 already has an IP address different from", "ip link delete cni0")
		nsRun(t, n1.NS, "ip", "addr", "del", foreign, "dev", "cni0")
	})
	t.Run("FORWARD policy DROP without flannel's accepts", func(t *testing.T) {
		restore := saveIPTables(t, n1.NS)
		defer restore()
		nsRun(t, n1.NS, "iptables", "-P", "FORWARD", "DROP")
		nsRun(t, n1.NS, "iptables", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD")
		requireProblem(t, c.runDoctor(t, n1), "forward rules", "FORWARD policy is DROP", "--iptables-forward-rules", "10.244.0.0/21")
	})
	t.Run("masquerade rules missing with --ip-masq", func(t *testing.T) {
		restore := saveIPTables(t, n1.NS)
		defer restore()
		nsRun(t, n1.NS, "iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")
		requireProblem(t, c.runDoctor(t, n1), "masquerade", "--ip-masq", "MASQUERADE", "restart flanneld")
	})
	t.Run("MTU mismatch", func(t *testing.T) { c.mtuFaults(t, n1, n2, envs[n1].MTU) })
	t.Run("duplicate public IP and subnets running out", func(t *testing.T) { c.duplicateAddress(t, n1, n2, envs) })
	t.Run("checksum offload on", func(t *testing.T) {
		setOffload(t, n1, true)
		defer setOffload(t, n1, false)
		requireProblem(t, c.runDoctor(t, n1), "vxlan checksum offload", "DisableTxChecksumOffload", "tx-checksum-ip-generic", "ethtool -K flannel.1")
	})
	t.Run("flanneld stopped, subnet.env missing, device gone", func(t *testing.T) { c.stoppedNode(t, n1) })
	c.requireHealthy(t, n1, 30*time.Second)
}

func vtepOf(t *testing.T, n *testbed.Node) string {
	t.Helper()
	mac, err := vtepMAC(n.NS)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// blockedPort drops VXLAN between n1 and n2 on n1: doctor names the port
// and the peer, and n1's flannel_peer_reachable for n2 goes to 0 within
// 30 s and back to 1 within 30 s after the drop is removed.
func (c *cluster) blockedPort(t *testing.T, n1, n2 *testbed.Node) {
	rules := [][]string{
		{"INPUT", "-s", n2.Addr.String(), "-p", "udp", "--dport", "8472", "-j", "DROP"},
		{"OUTPUT", "-d", n2.Addr.String(), "-p", "udp", "--dport", "8472", "-j", "DROP"},
	}
	for _, r := range rules {
		nsRun(t, n1.NS, append([]string{"iptables", "-I"}, r...)...)
	}
	removed := false
	unblock := func() {
		if !removed {
			for _, r := range rules {
				nsRun(t, n1.NS, append([]string{"iptables", "-D"}, r...)...)
			}
			removed = true
		}
	}
	defer unblock()
	start := time.Now()
	r := c.runDoctor(t, n1)
	requireProblem(t, r, "peer reachability", "UDP 8472", n2.Addr.String(), "is blocked")
	eventually(t, 30*time.Second-time.Since(start), "flannel_peer_reachable of "+n2.Name+" is 0", func() error {
		return peerReachable(n1, n2, "0")
	})
	t.Logf("flannel_peer_reachable{public_ip=%q} went to 0 %s after the drop", n2.Addr, time.Since(start).Round(time.Millisecond))
	// The gauge follows each probe; the log line needs two lost probes in
	// a row, so keep the drop until it is written.
	logCount := func(what string) int {
		log, _ := os.ReadFile(n1.LogFile)
		return strings.Count(string(log), "("+n2.Addr.String()+") "+what)
	}
	eventually(t, 30*time.Second, "n1 logs "+n2.Name+" unreachable", func() error {
		if logCount("is unreachable over the overlay") == 0 {
			return fmt.Errorf("not logged yet")
		}
		return nil
	})
	// The warning names the backend's real port, and its probe target as
	// an address (once its raw bytes reached the log).
	log, _ := os.ReadFile(n1.LogFile)
	if logCount("is unreachable over the overlay: 2 probes to 10.244.") != 1 ||
		strings.Count(string(log), "check that UDP 8472 (VXLAN) is open between this node and "+n2.Addr.String()+" ") != 1 {
		t.Errorf("n1's unreachable warning for %s does not name the probe target as an address and UDP 8472 (VXLAN)", n2.Addr)
	}
	unblock()
	took := eventually(t, 30*time.Second, "flannel_peer_reachable of "+n2.Name+" is 1 again", func() error {
		return peerReachable(n1, n2, "1")
	})
	t.Logf("flannel_peer_reachable back to 1 %s after the drop was removed", took.Round(time.Millisecond))
	eventually(t, 10*time.Second, "n1 logs "+n2.Name+" reachable again", func() error {
		if logCount("is reachable again") == 0 {
			return fmt.Errorf("not logged yet")
		}
		return nil
	})
	if down, up := logCount("is unreachable over the overlay"), logCount("is reachable again"); down != 1 || up != 1 {
		t.Errorf("n1's log reports %s unreachable %d times and reachable again %d times, want once each", n2.Addr, down, up)
	}
}

// peerReachable checks n1's flannel_peer_reachable gauge for n2.
func peerReachable(n1, n2 *testbed.Node, want string) error {
	body, err := metricsOf(n1)
	if err != nil {
		return err
	}
	re := regexp.MustCompile(`flannel_peer_reachable\{public_ip="` + regexp.QuoteMeta(n2.Addr.String()) + `",subnet="[^"]+"\} (\S+)`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return fmt.Errorf("no flannel_peer_reachable series for %s", n2.Addr)
	}
	if m[1] != want {
		return fmt.Errorf("flannel_peer_reachable for %s is %s", n2.Addr, m[1])
	}
	return nil
}

func metricsOf(n *testbed.Node) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, n.NS, network, addr)
		},
	}}
	return get(client, "http://127.0.0.1:10244/metrics")
}

// mtuFaults: flannel.1 with another MTU than FLANNEL_MTU, then a peer
// whose link cannot take full-size VXLAN packets.
func (c *cluster) mtuFaults(t *testing.T, n1, n2 *testbed.Node, mtu int) {
	nsRun(t, n1.NS, "ip", "link", "set", "flannel.1", "mtu", "1400")
	requireProblem(t, c.runDoctor(t, n1), "backend device", "MTU 1400", fmt.Sprintf("FLANNEL_MTU=%d", mtu))
	nsRun(t, n1.NS, "ip", "link", "set", "flannel.1", "mtu", fmt.Sprint(mtu))

	nsRun(t, n2.NS, "ip", "link", "set", n2.Iface, "mtu", "1400")
	defer nsRun(t, n2.NS, "ip", "link", "set", n2.Iface, "mtu", "1500")
	requireProblem(t, c.runDoctor(t, n1), "path MTU", n2.Addr.String(), fmt.Sprintf("FLANNEL_MTU=%d needs %d", mtu, mtu+50), "Backend \"MTU\"")
}

// duplicateAddress adds three leases: one advertising n2's address, two
// more so that 6 of the 7 subnets are leased.
func (c *cluster) duplicateAddress(t *testing.T, n1, n2 *testbed.Node, envs map[*testbed.Node]*subnetenv.Env) {
	ctx := testCtx(t, time.Minute)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	pubs := []string{n2.Addr.String(), "198.51.100.201", "198.51.100.202"}
	var keys []string
	for _, i := range freeSubnets(envs)[:len(pubs)] {
		key := fmt.Sprintf("%s/subnets/10.244.%d.0-24", testbed.DefaultEtcdPrefix, i)
		val := fmt.Sprintf(`{"PublicIP":%q,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:01:%02x"}}`, pubs[len(keys)], i)
		if _, err := cli.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	defer func() {
		for _, k := range keys {
			if _, err := cli.Delete(context.Background(), k); err != nil {
				t.Errorf("delete %s: %v", k, err)
			}
		}
	}()
	r := c.runDoctor(t, n1)
	requireProblem(t, r, "public address", "duplicate public address", "PublicIP "+n2.Addr.String()+" is advertised by 2 leases", "--public-ip")
	requireProblem(t, r, "peer reachability", "its PublicIP 198.51.100.201 does not answer from this node: an address the others cannot reach", "--public-ip")
	if ch := r.checks["subnet usage"]; ch.Status != doctor.Warning || !strings.Contains(ch.Summary, "6 of 7 subnets") {
		t.Errorf("subnet usage: %+v, want a warning for 6 of 7 subnets", ch)
	}
}

// freeSubnets lists the third octets of the doctor network's subnets
// (10.244.1-7.0/24) that no node holds.
func freeSubnets(envs map[*testbed.Node]*subnetenv.Env) []int {
	used := map[int]bool{}
	for _, env := range envs {
		used[int(env.Subnet.Addr().As4()[2])] = true
	}
	var out []int
	for i := 1; i <= 7; i++ {
		if !used[i] {
			out = append(out, i)
		}
	}
	return out
}

// stoppedNode stops n's flanneld, hides subnet.env and deletes flannel.1;
// doctor names all three. Then a fresh flanneld re-creates the device,
// again with the checksum offload off.
func (c *cluster) stoppedNode(t *testing.T, n *testbed.Node) {
	if err := c.StopFlanneld(n); err != nil {
		t.Fatal(err)
	}
	hidden := n.SubnetFile + ".hidden"
	if err := os.Rename(n.SubnetFile, hidden); err != nil {
		t.Fatal(err)
	}
	nsRun(t, n.NS, "ip", "link", "del", "flannel.1")
	r := c.runDoctor(t, n)
	requireProblem(t, r, "flanneld", "not running", "start flanneld")
	requireProblem(t, r, "subnet.env", n.SubnetFile+" does not exist", "flanneld is not ready")
	requireProblem(t, r, "backend device", "flannel.1", "missing")
	if err := os.Rename(hidden, n.SubnetFile); err != nil {
		t.Fatal(err)
	}
	c.start([]*testbed.Node{n}, doctorArgs...)
	on := true
	err := testbed.InNamespace(n.NS, func() error {
		var err error
		on, err = offload.TxChecksumOn("flannel.1")
		return err
	})
	if err != nil || on {
		t.Errorf("re-created flannel.1: %s on=%v (%v), want off", offload.Feature, on, err)
	}
}

// setOffload switches tx-checksum-ip-generic on n's flannel.1.
func setOffload(t *testing.T, n *testbed.Node, on bool) {
	t.Helper()
	err := testbed.InNamespace(n.NS, func() error {
		if !on {
			return offload.DisableTxChecksum("flannel.1")
		}
		cur, err := offload.TxChecksumOn("flannel.1")
		if err != nil {
			return err
		}
		if cur {
			return fmt.Errorf("%s is already on: flanneld did not turn it off", offload.Feature)
		}
		return offload.SetTxChecksum("flannel.1", true)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDoctorKube: in kube mode doctor checks this node's podCIDR and
// flanneld's permissions against a real kube-apiserver: healthy with the
// manifest's role, then a node without podCIDR, one outside the Network,
// and credentials without patch on nodes/status.
func TestDoctorKube(t *testing.T) {
	m := readManifest(t)
	k := newKubeCluster(t, "dock", 1)
	ctx := testCtx(t, 3*time.Minute)
	kubeconfig := k.flannelKubeconfig(ctx, m)
	n := k.Nodes[0]
	k.createNode(ctx, n.Name, podCIDR(n.Index))
	conf := netConf(t, n, defaultConfig)
	k.startReady(k.Nodes, kubeRun{kubeconfig: kubeconfig, netConf: conf, env: daemonSetEnv(m.account.Namespace, n),
		args: []string{"--healthz-port=10244", "--peer-probe-interval=0"}})
	kubeFlags := func(kc, node string) []string {
		return []string{"--kube-subnet-mgr", "--kubeconfig-file=" + kc, "--net-config-path=" + conf, "--node-name=" + node}
	}
	k.cluster.t = t
	eventually(t, 30*time.Second, "doctor in kube mode finds nothing", func() error {
		r := k.runDoctor(t, n, kubeFlags(kubeconfig, n.Name)...)
		if r.code != 0 || r.checks["kube node"].Status != doctor.OK {
			return fmt.Errorf("exit %d: %v", r.code, r.problems())
		}
		return nil
	})

	k.createNode(ctx, "nocidr", netip.Prefix{})
	requireProblem(t, k.runDoctor(t, n, kubeFlags(kubeconfig, "nocidr")...), "kube node", "node nocidr pod cidr not assigned", "--allocate-node-cidrs")
	k.createNode(ctx, "outside", netip.MustParsePrefix("10.99.0.0/24"))
	requireProblem(t, k.runDoctor(t, n, kubeFlags(kubeconfig, "outside")...), "kube node", "10.99.0.0/24 is outside the flannel Network 10.244.0.0/16", "--cluster-cidr")
	noPatch, err := k.api.ServiceAccountKubeconfig(ctx, m.account.Namespace, "flannel-no-patch", without(m.role.Rules, permission{"patch", "nodes/status", ""}))
	if err != nil {
		t.Fatal(err)
	}
	requireProblem(t, k.runDoctor(t, n, kubeFlags(noPatch, n.Name)...), "kube node", "not allowed: patch nodes/status", "ClusterRole")
}
