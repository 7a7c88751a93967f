package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/antispoof"
	fastpath "github.com/flannelgo/flannel/internal/datapath/ebpf"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/tools/doctor"
)

// ebpfConfig is a net-conf with the eBPF fast path on for backend.
func ebpfConfig(backend string) string {
	return fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q,"Datapath":"ebpf"}}`, backend)
}

// With "Datapath": "ebpf" (host-gw and vxlan), pod traffic takes the tc
// programs where it may and the kernel path everywhere else, and nothing a
// pod sees changes: pod to pod across nodes and on one node (redirected,
// the counters say so), pod to host and to the outside (kernel path,
// masqueraded), the MTU boundary. A program detached by hand is attached
// again, and a restart with the kernel path leaves no program anywhere.
func TestEBPFDatapath(t *testing.T) {
	for _, backend := range []string{"host-gw", "vxlan"} {
		t.Run(backend, func(t *testing.T) {
			c := newCluster(t, "eb"+strings.ReplaceAll(backend, "-", ""), clusterOpts{nodes: 2, config: ebpfConfig(backend)})
			args := append(slices.Clone(metricsArgs), "--ip-masq", "--reconcile-interval=1s")
			envs := c.start(c.Nodes, args...)
			n1, n2 := c.Nodes[0], c.Nodes[1]
			pods := c.addPods([]*testbed.Node{n1, n1, n2})
			a, b, remote := pods[0], pods[1], pods[2]
			ctx := testCtx(t, 3*time.Minute)
			t.Run("pod to remote pod is redirected", func(t *testing.T) {
				checkRedirected(t, ctx, a, remote, "remote", "inbound")
			})
			t.Run("pod to pod on one node is redirected", func(t *testing.T) {
				checkRedirected(t, ctx, a, b, "local", "local")
			})
			t.Run("MTU boundary on the fast path", func(t *testing.T) {
				checkFullSizeUDP(t, ctx, a, remote, envs[n1].MTU)
			})
			t.Run("pod to hosts and outside take the kernel path", func(t *testing.T) {
				checkKernelPath(t, ctx, c, a, remote)
			})
			t.Run("detached program is attached again", func(t *testing.T) {
				checkReattached(t, ctx, a)
			})
			checkDoctorPath(t, c, n1, "ebpf (tcx)")
			// Restart on the kernel path (the cluster's helpers report to
			// this test, not to a subtest).
			for _, n := range c.Nodes {
				if err := c.StopFlanneld(n); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.PutConfig(ctx, "", fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q}}`, backend)); err != nil {
				t.Fatal(err)
			}
			c.start(c.Nodes, args...)
			for _, n := range c.Nodes {
				if on := attachedAnywhere(t, n.NS); len(on) > 0 {
					t.Errorf("node %s on the kernel path still has fast-path programs on %s", n.Name, strings.Join(on, ", "))
				}
			}
			if got, err := sourceSeen(ctx, a.NS, remote.NS, remote.IP); err != nil || got != a.IP {
				t.Errorf("pod %s -> %s on the kernel path: saw %s, %v", a.Name, remote.Name, got, err)
			}
			checkDoctorPath(t, c, n1, "kernel")
		})
	}
}

// ebpfCounter reads one of the fast path's counters on n.
func ebpfCounter(ctx context.Context, n *testbed.Node, kind, label string) (float64, error) {
	name := fmt.Sprintf(`flannel_ebpf_redirected_packets_total{path=%q}`, label)
	if kind == "fallback" {
		name = fmt.Sprintf(`flannel_ebpf_fallback_packets_total{reason=%q}`, label)
	}
	return metric(ctx, n, name)
}

// checkRedirected sends 4 MiB over TCP from one pod to another and checks
// they arrive whole and unmasqueraded, and that the sender's node counted
// them under sendPath and the receiver's under recvPath. The pods' records
// reach the programs a moment after the pod is made: until the counter
// moves, the transfer is retried.
func checkRedirected(t *testing.T, ctx context.Context, from, to *testbed.Pod, sendPath, recvPath string) {
	t.Helper()
	var before, beforeRecv float64
	_, err := pollUntil(30*time.Second, func() error {
		var err error
		if before, err = ebpfCounter(ctx, from.Node, "redirect", sendPath); err != nil {
			return err
		}
		if beforeRecv, err = ebpfCounter(ctx, to.Node, "redirect", recvPath); err != nil {
			return err
		}
		if err := transfer(ctx, from, to, 4<<20); err != nil {
			return err
		}
		after, err := ebpfCounter(ctx, from.Node, "redirect", sendPath)
		if err != nil {
			return err
		}
		if after-before < 10 {
			return fmt.Errorf("%s redirect counter on %s went from %v to %v over a 4 MiB transfer", sendPath, from.Node.Name, before, after)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pod %s -> pod %s: %v", from.Name, to.Name, err)
	}
	if after, err := ebpfCounter(ctx, to.Node, "redirect", recvPath); err != nil || after-beforeRecv < 10 {
		t.Errorf("%s redirect counter on %s went from %v to %v (%v) over a 4 MiB transfer", recvPath, to.Node.Name, beforeRecv, after, err)
	}
	if got, err := sourceSeen(ctx, from.NS, to.NS, to.IP); err != nil || got != from.IP {
		t.Errorf("pod %s saw pod %s as %s (%v), want its own address %s", to.Name, from.Name, got, err, from.IP)
	}
}

// transfer sends n random bytes over TCP from one pod to a listener in the
// other and checks what arrived.
func transfer(ctx context.Context, from, to *testbed.Pod, n int) error {
	var ln net.Listener
	if err := testbed.InNamespace(to.NS, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(to.IP.String(), "0"))
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	got := make(chan [32]byte, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		defer conn.Close()
		h := sha256.New()
		_, _ = io.Copy(h, conn)
		got <- [32]byte(h.Sum(nil))
	}()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := testbed.DialInNamespace(dctx, from.NS, "tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(conn, bytes.NewReader(data)); err != nil {
		conn.Close()
		return fmt.Errorf("send: %w", err)
	}
	conn.Close()
	select {
	case sum, ok := <-got:
		if !ok || sum != sha256.Sum256(data) {
			return fmt.Errorf("the %d bytes arrived damaged or not at all", n)
		}
		return nil
	case <-dctx.Done():
		return fmt.Errorf("the %d bytes did not arrive: %w", n, dctx.Err())
	}
}

// checkFullSizeUDP sends a don't-fragment datagram that fills the pod MTU
// exactly, which must arrive through the fast path, and one byte more,
// which the pod's own stack refuses (EMSGSIZE) as on the kernel path.
func checkFullSizeUDP(t *testing.T, ctx context.Context, from, to *testbed.Pod, mtu int) {
	t.Helper()
	var pc net.PacketConn
	if err := testbed.InNamespace(to.NS, func() error {
		var err error
		pc, err = net.ListenPacket("udp", net.JoinHostPort(to.IP.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn, err := testbed.DialInNamespace(ctx, from.NS, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, _ := conn.(*net.UDPConn).SyscallConn()
	_ = raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := ebpfCounter(ctx, from.Node, "redirect", "remote")
	full := mtu - 28
	if _, err := conn.Write(make([]byte, full)); err != nil {
		t.Fatalf("send a %d-byte DF datagram (MTU %d): %v", full, mtu, err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	if n, _, err := pc.ReadFrom(buf); err != nil || n != full {
		t.Errorf("the %d-byte DF datagram from %s to %s: got %d bytes, %v", full, from.Name, to.Name, n, err)
	}
	if after, _ := ebpfCounter(ctx, from.Node, "redirect", "remote"); after <= before {
		t.Errorf("the full-size datagram was not redirected (remote counter %v -> %v)", before, after)
	}
	if _, err := conn.Write(make([]byte, full+1)); err == nil {
		t.Errorf("a %d-byte DF datagram left a pod whose MTU is %d", full+1, mtu)
	}
}

// checkKernelPath: traffic to the node itself, to another node and to the
// outside is left to the kernel, which masquerades what leaves the
// cluster; the fallback counter for destinations moves.
func checkKernelPath(t *testing.T, ctx context.Context, c *cluster, from, remote *testbed.Pod) {
	t.Helper()
	before, _ := ebpfCounter(ctx, from.Node, "fallback", "destination")
	for _, host := range []*testbed.Node{from.Node, remote.Node} {
		if _, err := sourceSeen(ctx, from.NS, host.NS, host.Addr); err != nil {
			t.Errorf("pod %s -> node %s (%s): %v", from.Name, host.Name, host.Addr, err)
		}
	}
	out, err := c.AddOutside(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkMasq(t, ctx, []*testbed.Pod{from, remote}, out.NS, out.Addr)
	if after, _ := ebpfCounter(ctx, from.Node, "fallback", "destination"); after <= before {
		t.Errorf("traffic to hosts was not counted as left to the kernel (destination fallbacks %v -> %v)", before, after)
	}
	if err := ping(ctx, from.NS, remote.IP, 56, false); err != nil {
		t.Errorf("ping (ICMP, the kernel path) %s -> %s: %v", from.Name, remote.Name, err)
	}
}

// hostVeth is the name of the pod's host-side veth, from the record the
// CNI plugin wrote.
func hostVeth(t *testing.T, p *testbed.Pod) string {
	t.Helper()
	recs, err := antispoof.ReadRecords(antispoof.RecordDir(p.Node.SubnetFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if slices.Contains(r.IPs, p.IP) {
			return r.HostIf
		}
	}
	t.Fatalf("no CNI record names pod %s (%s)", p.Name, p.IP)
	return ""
}

// checkReattached detaches the tcx link on the pod's veth as an operator
// with bpftool would and waits for flanneld to attach the program again.
func checkReattached(t *testing.T, ctx context.Context, p *testbed.Pod) {
	t.Helper()
	veth := hostVeth(t, p)
	err := testbed.InNamespace(p.Node.NS, func() error {
		l, err := netlink.LinkByName(veth)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		for _, prog := range res.Programs {
			id, ok := prog.LinkID()
			if !ok {
				continue
			}
			lk, err := link.NewFromID(id)
			if err != nil {
				return err
			}
			err = lk.(interface{ Detach() error }).Detach()
			lk.Close()
			if err != nil {
				return fmt.Errorf("detach link %d: %w", id, err)
			}
			return nil
		}
		return fmt.Errorf("no tcx link on %s to detach", veth)
	})
	if err != nil {
		t.Fatal(err)
	}
	took, err := pollUntil(20*time.Second, func() error {
		path, err := pathOf(p.Node.NS, veth)
		if err == nil && path == "kernel" {
			err = fmt.Errorf("%s is on the kernel path", veth)
		}
		return err
	})
	if err != nil {
		t.Fatalf("program detached from %s on %s was not attached again: %v", veth, p.Node.Name, err)
	}
	t.Logf("re-attached to %s after %s", veth, took.Round(time.Millisecond))
}

func pathOf(ns, ifname string) (string, error) {
	var path string
	err := testbed.InNamespace(ns, func() (err error) {
		path, err = fastpath.PathOf(ifname)
		return err
	})
	return path, err
}

// attachedAnywhere lists the interfaces of namespace ns with a fast-path
// program at ingress.
func attachedAnywhere(t *testing.T, ns string) []string {
	t.Helper()
	var on []string
	err := testbed.InNamespace(ns, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			path, err := fastpath.Path(l.Attrs().Index)
			if err != nil {
				return err
			}
			if path != "kernel" {
				on = append(on, l.Attrs().Name+" ("+path+")")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return on
}

// With the fast path on and --network-policy, a pod a policy selects is
// left to the kernel path, where the policy holds: x/b (node 2) receives
// nothing, y/c (node 3) sends nothing, and every other pair still talks,
// pods no policy selects over the fast path.
func TestEBPFNetworkPolicy(t *testing.T) {
	t.Setenv("FLANNEL_E2E_DATAPATH", "ebpf")
	l := newNPCluster(t)
	ctx := testCtx(t, 5*time.Minute)
	l.check(ctx, allowAll)
	l.change(ctx, func() {
		l.createPolicy(ctx, "x", "deny-to-b", npSpec{PodSelector: *lsel("pod", "b"), PolicyTypes: npIngress})
		l.createPolicy(ctx, "y", "deny-from-c", npSpec{PodSelector: *lsel("pod", "c"), PolicyTypes: npEgress})
	})
	policyBefore, err := ebpfCounter(ctx, l.Nodes[1], "fallback", "policy")
	if err != nil {
		t.Fatal(err)
	}
	fastBefore, err := ebpfCounter(ctx, l.Nodes[0], "redirect", "remote")
	if err != nil {
		t.Fatal(err)
	}
	l.check(ctx, func(from, to *npPod, _ int, _ string) bool { return !to.is("x/b") && !from.is("y/c") })
	if after, _ := ebpfCounter(ctx, l.Nodes[1], "fallback", "policy"); after <= policyBefore {
		t.Errorf("traffic to x/b on %s was not left to the kernel path (policy fallbacks %v -> %v)", l.Nodes[1].Name, policyBefore, after)
	}
	if after, _ := ebpfCounter(ctx, l.Nodes[0], "redirect", "remote"); after <= fastBefore {
		t.Errorf("pods of %s no policy selects did not keep the fast path (remote redirects %v -> %v)", l.Nodes[0].Name, fastBefore, after)
	}
}

// checkDoctorPath runs flannelctl doctor on n and wants its data path check
// to pass and name path for each of the node's pods.
func checkDoctorPath(t *testing.T, c *cluster, n *testbed.Node, path string) {
	t.Helper()
	r := c.runDoctor(t, n)
	ch, ok := r.checks["data path"]
	if !ok || ch.Status != doctor.OK || len(ch.Evidence) != len(n.Pods) {
		t.Fatalf("doctor on %s: data path check %+v, want ok with one line for each of %d pods", n.Name, ch, len(n.Pods))
	}
	for _, line := range ch.Evidence {
		if !strings.HasSuffix(line, ": "+path) {
			t.Errorf("doctor on %s: %q, want the pod on %s", n.Name, line, path)
		}
	}
}
