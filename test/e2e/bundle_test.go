package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/supportbundle"
)

// TestDoctorBundle: on a WireGuard node whose network config holds a PSK,
// `flannelctl doctor --bundle FILE` writes an archive with what a
// maintainer needs (verdict, subnet.env, config, leases, processes, routes,
// neighbours, FDB, rules) and the PSK nowhere in it; and the text report
// prints each check as it ends, not all at the end.
func TestDoctorBundle(t *testing.T) {
	psk, _ := wgtypes.GenerateKey()
	conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":%q}}`, psk)
	c := newCluster(t, "bdl", clusterOpts{nodes: 2, config: conf})
	envs := c.start(c.Nodes, doctorArgs...)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	path := filepath.Join(t.TempDir(), "n1-flannel.tar.gz")
	r := c.runDoctor(t, n1, "--bundle="+path, "--etcd-password=hunter2-not-a-real-one")
	files := readBundle(t, path)
	for _, name := range []string{"doctor.json", "doctor.txt", "subnet.env", "datastore/network-config.json", "datastore/leases.json",
		"flanneld/processes.txt", "kernel/routes-ipv4.txt", "kernel/neighbours.txt", "kernel/fdb.txt", "kernel/links.txt",
		"rules/iptables-save.txt", "rules/nft-ruleset.txt", "logs/flanneld-journal.txt"} {
		if _, ok := files["n1-flannel/"+name]; !ok {
			t.Errorf("bundle lacks %s (has %v)", name, sortedNames(files))
		}
	}
	want := map[string]string{
		"subnet.env":                    "FLANNEL_SUBNET=" + envs[n1].Subnet.String(),
		"kernel/routes-ipv4.txt":        "10.244.0.0/16 dev flannel-wg",
		"datastore/network-config.json": `"PSK": "REDACTED"`,
		"datastore/leases.json":         n2.Addr.String(),
		"flanneld/processes.txt":        "--healthz-port=10244",
	}
	for name, s := range want {
		if !strings.Contains(files["n1-flannel/"+name], s) {
			t.Errorf("%s lacks %q:\n%s", name, s, files["n1-flannel/"+name])
		}
	}
	if !strings.Contains(files["n1-flannel/doctor.json"], `"checks"`) || r.code != 0 && r.code != 1 {
		t.Errorf("doctor.json %q, exit %d", files["n1-flannel/doctor.json"], r.code)
	}
	for name, data := range files {
		for _, secret := range []string{psk.String(), "hunter2-not-a-real-one"} {
			if strings.Contains(data, secret) {
				t.Errorf("%s holds a secret (%s...)", name, secret[:6])
			}
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bundle file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	t.Run("checks printed as they finish", func(t *testing.T) { streamsChecks(t, c, n1, n2) })
}

// streamsChecks has n2 drop everything n1 sends, so that n1's probes wait
// for their timeouts (3 of 1 s each), and reads doctor's text report as it
// comes: the first line arrives while the probes still run, seconds before
// the end.
func streamsChecks(t *testing.T, c *cluster, n1, n2 *testbed.Node) {
	for _, rule := range []string{"add table inet bdltest", "add chain inet bdltest in { type filter hook input priority 0; }",
		"add rule inet bdltest in ip saddr " + n1.Addr.String() + " drop"} {
		nsRun(t, n2.NS, "nft", rule)
	}
	defer nsRun(t, n2.NS, "nft", "delete table inet bdltest")
	ctx := testCtx(t, 2*time.Minute)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n1.NS, filepath.Join(bins.dir, "flannelctl"), "doctor",
		"--etcd-endpoints="+c.EtcdEndpoint(), "--subnet-file="+n1.SubnetFile, "--healthz=127.0.0.1:10244", "--timeout=90s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var first time.Duration
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if first == 0 {
			first = time.Since(start)
		}
		lines = append(lines, sc.Text())
	}
	_ = cmd.Wait()
	total := time.Since(start)
	report := strings.Join(lines, "\n")
	if !strings.Contains(report, "PROBLEM  peer reachability") {
		t.Fatalf("doctor did not find the unreachable peer:\n%s", report)
	}
	if total-first < 2*time.Second {
		t.Errorf("first line after %s, exit after %s: the report came all at once\n%s", first, total, report)
	}
	t.Logf("first line after %s, the last check (probes waiting for their timeouts) ended %s later", first.Round(time.Millisecond), (total - first).Round(time.Millisecond))
}

func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, err := supportbundle.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func sortedNames(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
