package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// alloc leases subnets and writes subnet.env, and programs nothing: no
// device, no route to a peer. Routes made by something else (here by hand,
// as a cloud route table would) then carry the pods' traffic.
func TestAllocBackend(t *testing.T) {
	c := newCluster(t, "alc", clusterOpts{nodes: 2, config: `{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`})
	envs := c.start(c.Nodes)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	if envs[n1].Subnet.Masked() == envs[n2].Subnet.Masked() {
		t.Fatalf("both nodes got %s", envs[n1].Subnet)
	}
	for _, n := range c.Nodes {
		if envs[n].MTU != 1500 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want the interface's 1500", n.Name, envs[n].MTU)
		}
		if devs := flannelDevices(t, n.NS); len(devs) > 0 {
			t.Errorf("node %s has %v; alloc creates no device", n.Name, devs)
		}
	}
	waitLog(t, c, n1, regexp.MustCompile(`ready: this backend does not follow other nodes`), 10*time.Second)
	if r, err := routeVia(n1.NS, envs[n2].Subnet.Masked()); err == nil {
		t.Errorf("node n1 has a route to n2's subnet (%+v); alloc programs nothing", r)
	}
	ctx := testCtx(t, time.Minute)
	for _, pair := range [][2]*testbed.Node{{n1, n2}, {n2, n1}} {
		dst := envs[pair[1]].Subnet.Masked().String()
		if out, err := testbed.Exec(ctx, pair[0].NS, "ip", "route", "add", dst, "via", pair[1].Addr.String()); err != nil {
			t.Fatalf("add route by hand: %v: %s", err, out)
		}
	}
	pods := c.addPods(c.Nodes)
	allPairsPing(t, pods)
}

// extension runs the operator's commands: PreStartupCommand's output is
// the lease's BackendData, SubnetAddCommand gets each peer's variables and
// data (here it installs host-gw style routes, so pods ping), and
// SubnetRemoveCommand runs when a lease goes away.
func TestExtensionBackend(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "commands.log")
	add := writeScript(t, dir, "add", `ip route replace "$1" via "$2" dev eth0 && echo "add $1 $2 $(cat)" >>`+logPath)
	del := writeScript(t, dir, "del", `ip route del "$SUBNET" && echo "del $SUBNET" >>`+logPath)
	post := writeScript(t, dir, "post", `echo "post $NETWORK $SUBNET $PUBLIC_IP" >>`+logPath)
	conf, _ := json.Marshal(map[string]any{"Network": "10.244.0.0/16", "Backend": map[string]any{
		"Type": "extension", "PreStartupCommand": "echo 'ext data'", "PostStartupCommand": post,
		"SubnetAddCommand": add + " $SUBNET ${PUBLIC_IP}", "SubnetRemoveCommand": del,
	}})
	c := newCluster(t, "ext", clusterOpts{nodes: 3, config: string(conf)})
	envs := c.start(c.Nodes)
	ctx := testCtx(t, time.Minute)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := leaseKey(envs[c.Nodes[0]].Subnet.Masked())
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"BackendData":"ext data"`) {
		t.Fatalf("lease %s = %v, %v; want BackendData \"ext data\"", key, resp, err)
	}
	var want []string
	for _, n := range c.Nodes {
		want = append(want, fmt.Sprintf("post 10.244.0.0/16 %s %s", envs[n].Subnet.Masked(), n.Addr))
		for _, m := range c.Nodes {
			if m != n {
				want = append(want, fmt.Sprintf("add %s %s ext data", envs[m].Subnet.Masked(), m.Addr))
			}
		}
	}
	eventually(t, 10*time.Second, "every command ran once", func() error { return sameLines(logPath, want) })
	allPairsPing(t, c.addPods(c.Nodes))

	gone := c.Nodes[2]
	if err := c.StopFlanneld(gone); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, leaseKey(envs[gone].Subnet.Masked())); err != nil {
		t.Fatal(err)
	}
	want = append(want, "del "+envs[gone].Subnet.Masked().String(), "del "+envs[gone].Subnet.Masked().String())
	eventually(t, 10*time.Second, "SubnetRemoveCommand on both remaining nodes", func() error { return sameLines(logPath, want) })
}

// ipip needs the kernel's ipip module: where it is missing, flanneld exits
// with a message naming the cause and the fix.
func TestIPIPBackend(t *testing.T) {
	c := newCluster(t, "ipip", clusterOpts{nodes: 2, config: `{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`})
	if !kernelHasIPIP(t) {
		c.requireKernelLacks(t, "ipip", "the data path test needs the ipip module; the start-up message was checked",
			"this kernel lacks ipip support", "modprobe ipip", "another backend such as vxlan")
	}
	envs := c.start(c.Nodes)
	for n, env := range envs {
		if env.MTU != 1480 {
			t.Errorf("node %s: FLANNEL_MTU=%d, want 1480", n.Name, env.MTU)
		}
	}
	pods := c.addPods(c.Nodes)
	allPairsPing(t, pods)
	if err := ping(testCtx(t, time.Minute), pods[0].NS, pods[1].IP, 1452, true); err != nil {
		t.Errorf("1452-byte DF ping over ipip (pod MTU 1480) should pass: %v", err)
	}
	// A peer's route deleted by hand is back within 1 s (the shared
	// per-peer engine's healer, as for vxlan and host-gw).
	n1, n2 := c.Nodes[0], c.Nodes[1]
	sub2 := envs[n2].Subnet.Masked()
	start := time.Now()
	breakIt(t, "ip", "-n", n1.NS, "route", "del", sub2.String())
	measure(t, start, time.Second, "ipip route deleted by hand -> restored", func() error {
		if via, err := routeVia(n1.NS, sub2); err != nil || via.gw != n2.Addr || via.dev != "flannel.ipip" {
			return fmt.Errorf("route to %s: %+v %v", sub2, via, err)
		}
		return nil
	})
	allPairsPing(t, pods)
}

// kernelHasIPIP tries to create an ipip device in a scratch namespace.
func kernelHasIPIP(t *testing.T) bool {
	ns := tbtest.NS(t, "fl-ipipprobe"+os.Getenv("FLANNEL_E2E_TAG"))
	ctx := testCtx(t, 30*time.Second)
	_, err := testbed.Exec(ctx, ns, "ip", "link", "add", "probe0", "type", "ipip", "local", "198.51.100.1")
	return err == nil
}

func leaseKey(subnet netip.Prefix) string {
	return testbed.DefaultEtcdPrefix + "/subnets/" + strings.Replace(subnet.String(), "/", "-", 1)
}

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// sameLines compares a file's lines with want, ignoring order.
func sameLines(path string, want []string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	got := strings.Split(strings.TrimSpace(string(data)), "\n")
	w := append([]string(nil), want...)
	sort.Strings(got)
	sort.Strings(w)
	if strings.Join(got, "\n") != strings.Join(w, "\n") {
		return fmt.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(w, "\n"))
	}
	return nil
}
