package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// A DROP rule that another firewall appended to FORWARD before flanneld
// started still drops: flanneld appends its jump to FLANNEL-FWD, as
// upstream does, and moves it back to the end at every start (here: a
// restart after the rule was added behind the running daemon's jump).
func TestForeignDropRuleBeforeFlannelJump(t *testing.T) {
	c := newCluster(t, "fjmp", clusterOpts{nodes: 2})
	c.start(c.Nodes)
	ctx := testCtx(t, 3*time.Minute)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	a, err := c.AddPod(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := c.AddPod(ctx, n2)
	if err != nil {
		t.Fatal(err)
	}
	open, err := c.AddPod(ctx, n2)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*testbed.Pod{blocked, open} {
		if err := ping(ctx, a.NS, p.IP, 56, false); err != nil {
			t.Fatalf("before the DROP rule: pod %s -> %s: %v", a.Name, p.Name, err)
		}
	}

	if err := c.StopFlanneld(n1); err != nil {
		t.Fatal(err)
	}
	drop := []string{"iptables", "-t", "filter", "-A", "FORWARD", "-s", a.IP.String(), "-d", blocked.IP.String(), "-j", "DROP"}
	if _, err := testbed.Exec(ctx, n1.NS, drop...); err != nil {
		t.Fatal(err)
	}
	c.start([]*testbed.Node{n1})

	if err := ping(ctx, a.NS, blocked.IP, 56, false); err == nil {
		b, _ := testbed.Exec(ctx, n1.NS, "iptables", "-t", "filter", "-S", "FORWARD")
		t.Errorf("pod %s -> %s passed although node %s's FORWARD drops it; flannel's ACCEPT ran first:\n%s", a.Name, blocked.Name, n1.Name, b)
	}
	if err := ping(ctx, a.NS, open.IP, 56, false); err != nil {
		t.Errorf("pod %s -> %s (not dropped): %v", a.Name, open.Name, err)
	}
	b, err := testbed.Exec(ctx, n1.NS, "iptables", "-t", "filter", "-S", "FORWARD")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("-A FORWARD -s %s/32 -d %s/32 -j DROP\n-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n", a.IP, blocked.IP)
	if got := string(b); len(got) < len(want) || got[len(got)-len(want):] != want {
		t.Errorf("node %s's FORWARD chain ends\n%s\nwant it to end\n%s", n1.Name, got, want)
	}
}

// A node whose lease was deleted re-creates it while its subnet is free;
// once another node holds the subnet, flanneld exits non-zero naming the
// new owner, so that its supervisor restarts it into a fresh subnet.
func TestOwnLeaseTakenExits(t *testing.T) {
	c := newCluster(t, "ftkn", clusterOpts{nodes: 2})
	envs := c.start(c.Nodes)
	n1 := c.Nodes[0]
	key := subnetKey(envs[n1].Subnet.Masked())
	ctx := testCtx(t, 2*time.Minute)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "lease "+key+" re-created by its node", func() error {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 || !strings.Contains(string(resp.Kvs[0].Value), n1.Addr.String()) {
			return fmt.Errorf("etcd holds %v", resp.Kvs)
		}
		return nil
	})

	// The node is frozen (as if cut off from etcd) while its lease goes
	// and another node takes the subnet, so it cannot re-create the lease
	// in between.
	const owner = "198.51.100.99"
	p := c.Flanneld(n1)
	if err := syscall.Kill(p.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, errDel := cli.Delete(ctx, key)
	_, errPut := cli.Put(ctx, key, vxlanValue(owner, "ae:99:99:99:99:99"))
	if err := syscall.Kill(p.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if errDel != nil || errPut != nil {
		t.Fatal(errDel, errPut)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("flanneld on %s still runs 30 s after node %s took its subnet", n1.Name, owner)
	}
	if err := p.Wait(); err == nil {
		t.Errorf("flanneld on %s exited 0, want non-zero so that its supervisor restarts it", n1.Name)
	}
	log := strings.Join(logLines(n1, "lease has been revoked"), "\n")
	if !strings.Contains(log, owner) {
		t.Errorf("no log line saying the lease was revoked and naming the new owner %s:\n%s", owner, log)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), owner) {
		t.Errorf("the new owner's lease became %v", resp.Kvs)
	}
}

// With etcd auth on and a role that grants only upstream's keys
// (<prefix>/config read, <prefix>/subnets/ read-write), flanneld runs, logs
// once that its liveness marker is refused, and writes nothing else.
func TestEtcdUpstreamRoleOnly(t *testing.T) {
	c := newCluster(t, "fauth", clusterOpts{nodes: 2})
	ctx := testCtx(t, 3*time.Minute)
	root := enableUpstreamRole(t, ctx, c, "flannel", "flannelpw")
	c.start(c.Nodes, "--etcd-username=flannel", "--etcd-password=flannelpw")
	if n := allPairsPing(t, c.addPods(c.Nodes)); n != 2 {
		t.Fatalf("%d pod pairs answered, want 2", n)
	}
	// A restart keeps its subnet without the marker.
	n1 := c.Nodes[0]
	before, err := subnetenv.Read(n1.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StopFlanneld(n1); err != nil {
		t.Fatal(err)
	}
	after := c.start([]*testbed.Node{n1}, "--etcd-username=flannel", "--etcd-password=flannelpw")[n1]
	if after.Subnet != before.Subnet {
		t.Errorf("restarted node got %s, want its subnet %s", after.Subnet, before.Subnet)
	}
	for _, n := range c.Nodes {
		if got := logLines(n, "refuses the liveness markers"); len(got) != 1+boolInt(n == n1) {
			t.Errorf("node %s logged the refusal %d times (one per start wanted):\n%s", n.Name, len(got), strings.Join(got, "\n"))
		}
	}
	resp, err := root.Get(ctx, testbed.DefaultEtcdPrefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if k != testbed.DefaultEtcdPrefix+"/config" && !strings.HasPrefix(k, testbed.DefaultEtcdPrefix+"/subnets/") {
			t.Errorf("key %s is outside upstream's layout", k)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// enableUpstreamRole turns etcd auth on with user (password pw) in a role
// granting exactly upstream's keys, and returns a root client.
func enableUpstreamRole(t *testing.T, ctx context.Context, c *cluster, user, pw string) *clientv3.Client {
	t.Helper()
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	prefix := testbed.DefaultEtcdPrefix
	subnets := prefix + "/subnets/"
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "flannel"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "flannel", prefix+"/config", "", clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "flannel", subnets, clientv3.GetPrefixRangeEnd(subnets), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, user, pw); return err },
		func() error { _, err := cli.UserGrantRole(ctx, user, "flannel"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("etcd auth set-up: %v", err)
		}
	}
	root, err := clientv3.New(clientv3.Config{
		Endpoints: []string{c.EtcdEndpoint()}, DialTimeout: 5 * time.Second, Context: ctx,
		Username: "root", Password: "rootpw", Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, c.Hub.NS, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// Kube mode: after a reboot (flannel.1 gone, the Node's backend-data
// annotation kept) flannel.1 comes back with the MAC the annotation
// names, as upstream restores it, so the peers' FDB entries stay valid
// and pods reach each other at once.
func TestKubeVXLANMACSurvivesReboot(t *testing.T) {
	k := newKubeCluster(t, "fkmac", 2)
	ctx := testCtx(t, 3*time.Minute)
	for _, n := range k.Nodes {
		k.createNode(ctx, n.Name, podCIDR(n.Index))
	}
	run := kubeRun{kubeconfig: k.api.AdminKubeconfig}
	k.startReady(k.Nodes, run)
	pods := k.addPods(k.Nodes)
	n1 := k.Nodes[0]
	before, err := vtepMAC(n1.NS)
	if err != nil {
		t.Fatal(err)
	}
	if data := k.node(ctx, n1.Name).Annotations[annPrefix+"backend-data"]; !strings.Contains(data, before) {
		t.Fatalf("node %s: backend-data %s does not name flannel.1's MAC %s", n1.Name, data, before)
	}

	if err := k.StopFlanneld(n1); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Exec(ctx, n1.NS, "ip", "link", "del", "flannel.1"); err != nil {
		t.Fatal(err)
	}
	k.startReady([]*testbed.Node{n1}, run)
	after, err := vtepMAC(n1.NS)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("after the reboot flannel.1 on %s has MAC %s, want %s from its backend-data annotation", n1.Name, after, before)
	}
	if n := allPairsPing(t, pods); n != 2 {
		t.Errorf("%d pod pairs answered after the reboot, want 2", n)
	}
}
