package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The Vagrant case: every node's first NIC (eth0, holding the default
// route) carries the same address, and the real network is on eth1. The
// default choice must produce the duplicate-address error instead of two
// nodes silently sharing one address; --iface, --iface-regex and
// --iface-can-reach each pick eth1 and traffic flows.
func TestInterfaceSelection(t *testing.T) {
	c := newCluster(t, "ifs", clusterOpts{nodes: 2})
	for _, n := range c.Nodes {
		if err := vagrantNICs(n); err != nil {
			t.Fatalf("node %s: %v", n.Name, err)
		}
	}

	t.Cleanup(func() { c.stopAll(t) })
	t.Run("default", func(t *testing.T) {
		envs := c.startRaw(t, c.Nodes)
		if envs[0].Subnet.Masked() == envs[1].Subnet.Masked() {
			t.Fatalf("both nodes got %s", envs[0].Subnet)
		}
		for _, n := range c.Nodes {
			eventually(t, 10*time.Second, "duplicate-address error in "+n.Name+"'s log", func() error {
				log, _ := os.ReadFile(n.LogFile)
				for _, want := range []string{"duplicate public address", envs[0].Subnet.Masked().Addr().String(), envs[1].Subnet.Masked().Addr().String(), "--iface"} {
					if !strings.Contains(lastRun(log), want) {
						return fmt.Errorf("no %q in the log", want)
					}
				}
				return nil
			})
		}
		c.stopAll(t)
	})
	for _, sel := range []struct{ name, arg string }{
		{"iface", "--iface=eth1"},
		{"iface-regex", "--iface-regex=^eth[1-9]$"},
		{"iface-can-reach", "--iface-can-reach=" + c.Hub.Addr.String()},
	} {
		t.Run(sel.name, func(t *testing.T) {
			c.startRaw(t, c.Nodes, sel.arg)
			for _, n := range c.Nodes {
				log, _ := os.ReadFile(n.LogFile)
				if want := "eth1"; !strings.Contains(lastRun(log), want) || strings.Contains(lastRun(log), "duplicate public address") {
					t.Errorf("node %s with %s: start-up log does not name %s or reports a duplicate:\n%s", n.Name, sel.arg, want, lastRun(log))
				}
			}
			pods := c.addPods(c.Nodes)
			if pairs := allPairsPing(t, pods); pairs != 2 {
				t.Errorf("checked %d pairs", pairs)
			}
			for _, p := range pods {
				if err := c.RemovePod(context.Background(), p); err != nil {
					t.Error(err)
				}
			}
			c.stopAll(t)
			// The next phase starts from an empty datastore, so nodes get
			// new subnets: cni0 with the old gateway address must go (the
			// bridge plugin refuses a bridge holding another address).
			for _, n := range c.Nodes {
				if _, err := testbed.Exec(context.Background(), n.NS, "ip", "link", "del", "cni0"); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// vagrantNICs renames the node's underlay NIC to eth1 and gives it a new
// eth0 with 203.0.113.15/24 and the default route, a dead end like a VM's
// NAT interface (this testbed has no path to the outside world).
func vagrantNICs(n *testbed.Node) error {
	err := testbed.WithHandle(n.NS, func(h *netlink.Handle) error {
		l, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := h.LinkSetDown(l); err != nil {
			return err
		}
		if err := h.LinkSetName(l, "eth1"); err != nil {
			return err
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
		nat := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "natpeer"}
		if err := h.LinkAdd(nat); err != nil {
			return err
		}
		for _, name := range []string{"eth0", "natpeer"} {
			l, err := h.LinkByName(name)
			if err == nil {
				err = h.LinkSetUp(l)
			}
			if err != nil {
				return err
			}
		}
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("203.0.113.15/24")
		if err := h.AddrAdd(eth0, addr); err != nil {
			return err
		}
		return h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("203.0.113.1")})
	})
	if err != nil {
		return fmt.Errorf("make Vagrant-like NICs: %w", err)
	}
	n.Iface = "eth1"
	return nil
}

// startRaw starts flanneld with only args for interface selection (no
// --iface from the testbed), on a clean datastore, and waits for
// subnet.env.
func (c *cluster) startRaw(t *testing.T, nodes []*testbed.Node, args ...string) []*subnetenv.Env {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	c.clearLeases(t)
	started := time.Now()
	var procs []*testbed.Proc
	for _, n := range nodes {
		_ = os.Remove(n.SubnetFile)
		mark(n.LogFile)
		argv := append([]string{bins.flanneld, "--etcd-endpoints=" + c.EtcdEndpoint(), "--subnet-file=" + n.SubnetFile, "-v=2"}, args...)
		p, err := c.StartProcess(ctx, n.NS, n.LogFile, argv...)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	c.raw = procs
	envs := make([]*subnetenv.Env, len(nodes))
	for i, n := range nodes {
		env, err := waitFresh(ctx, procs[i], n, started)
		if err != nil {
			t.Fatalf("node %s: %v", n.Name, err)
		}
		envs[i] = env
	}
	return envs
}

func (c *cluster) stopAll(t *testing.T) {
	t.Helper()
	for _, p := range c.raw {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	}
	c.raw = nil
}

// clearLeases deletes every lease, so that each phase starts afresh.
func (c *cluster) clearLeases(t *testing.T) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Delete(ctx, testbed.DefaultEtcdPrefix+"/subnets/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
}

const runMark = "==== e2e: new run ===="

// mark appends a separator to a log, so a check reads only the last run.
func mark(path string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		fmt.Fprintln(f, runMark)
		f.Close()
	}
}

func lastRun(log []byte) string {
	s := string(log)
	if i := strings.LastIndex(s, runMark); i >= 0 {
		return s[i:]
	}
	return s
}
