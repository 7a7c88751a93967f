package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/droplog"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

const dualStackConf = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`

// spoofWorld is a dual-stack kube cluster with --network-policy: on node
// 0 pods t (admits only f), f, s (egress denied to everyone) and q, on
// node 1 pods r (admits only f) and o. s is the hostile tenant; f, q and o
// admit anyone.
type spoofWorld struct {
	*kubeCluster
	pods map[string]*testbed.Pod
}

func newSpoofWorld(t *testing.T) *spoofWorld {
	k := newKubeCluster(t, "spoof", 2, func(o *testbed.Options) { o.IPv6 = true })
	ctx := testCtx(t, 3*time.Minute)
	for _, n := range k.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
		node.Spec.PodCIDR = podCIDR(n.Index).String()
		node.Spec.PodCIDRs = []string{node.Spec.PodCIDR, fmt.Sprintf("fd00:10:244:%x::/64", n.Index)}
		if _, err := k.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	run := npRun(k, true)
	for _, n := range k.Nodes {
		run.netConf = netConf(t, n, dualStackConf)
		k.startKube(n, run)
	}
	k.waitReady(k.Nodes, time.Now().Add(-time.Minute), time.Minute)
	w := &spoofWorld{kubeCluster: k, pods: map[string]*testbed.Pod{}}
	if _, err := k.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name string
		node int
	}{{"t", 0}, {"f", 0}, {"s", 0}, {"q", 0}, {"r", 1}, {"o", 1}} {
		tp, err := k.AddPod(ctx, k.Nodes[p.node])
		if err != nil {
			t.Fatal(err)
		}
		w.pods[p.name] = tp
		w.podObject(ctx, p.name, tp)
	}
	admitOnlyF := networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "f"}}}}}}}
	for name, spec := range map[string]networkingv1.NetworkPolicySpec{
		"t-from-f": withSelector(admitOnlyF, "t"),
		"r-from-f": withSelector(admitOnlyF, "r"),
		"s-no-egress": withSelector(networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}, "s"),
	} {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name}, Spec: spec}
		if _, err := k.cs.NetworkingV1().NetworkPolicies("x").Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func withSelector(spec networkingv1.NetworkPolicySpec, pod string) networkingv1.NetworkPolicySpec {
	spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"pod": pod}}
	return spec
}

func (w *spoofWorld) podObject(ctx context.Context, name string, tp *testbed.Pod) {
	w.t.Helper()
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, Labels: map[string]string{"pod": name}},
		Spec: corev1.PodSpec{NodeName: tp.Node.Name, Containers: []corev1.Container{{Name: "c", Image: "agnhost"}}}}
	created, err := w.cs.CoreV1().Pods("x").Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: tp.IP.String(),
		PodIPs: []corev1.PodIP{{IP: tp.IP.String()}, {IP: tp.IP6.String()}}}
	if _, err := w.cs.CoreV1().Pods("x").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

// addr is pod p's address of the family of like.
func addr(p *testbed.Pod, like netip.Addr) netip.Addr {
	if like.Is4() {
		return p.IP
	}
	return p.IP6
}

// arrived sends three datagrams (udp) or connection attempts (tcp) from
// pod `from`, with source address src, to dst port 7000 and reports how
// many the destination pod's kernel received, counted by an nft rule in
// its namespace: a forged TCP SYN never completes, so only the receiver
// can tell whether it got through.
func (w *spoofWorld) arrived(ctx context.Context, from *testbed.Pod, src netip.Addr, to *testbed.Pod, dst netip.Addr, proto string) int {
	w.t.Helper()
	fam := "ip"
	if dst.Is6() {
		fam = "ip6"
	}
	rule := fmt.Sprintf("add table inet seen; add chain inet seen in { type filter hook input priority -500; }; add rule inet seen in %s saddr %s %s dport 7000 counter", fam, src, proto)
	if out, err := testbed.Exec(ctx, to.NS, "nft", rule); err != nil {
		w.t.Fatalf("count arrivals in %s: %v %s", to.Name, err, out)
	}
	defer func() { _, _ = testbed.Exec(ctx, to.NS, "nft", "delete", "table", "inet", "seen") }()
	if err := testbed.InNamespace(from.NS, func() error { return send(src, dst, proto) }); err != nil {
		w.t.Fatalf("send from %s as %s: %v", from.Name, src, err)
	}
	time.Sleep(200 * time.Millisecond)
	out, err := testbed.Exec(ctx, to.NS, "nft", "list", "chain", "inet", "seen", "in")
	if err != nil {
		w.t.Fatalf("read arrivals in %s: %v %s", to.Name, err, out)
	}
	var n int
	if i := strings.Index(string(out), "packets "); i >= 0 {
		fmt.Sscanf(string(out)[i:], "packets %d", &n)
	}
	return n
}

// send is what a hostile pod does: datagrams or connection attempts from
// an address it chose. The address must be on one of its interfaces.
func send(src, dst netip.Addr, proto string) error {
	for range 3 {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		if proto == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err := d.Dial(proto, net.JoinHostPort(dst.String(), "7000"))
		if err != nil {
			continue // the forged SYN went out; nobody answered
		}
		_, _ = c.Write([]byte("spoof"))
		c.Close()
	}
	return nil
}

// claim puts a on eth0 of pod p, as a pod with CAP_NET_ADMIN (or one
// crafting raw packets with CAP_NET_RAW) forges a source.
func claim(ctx context.Context, t *testing.T, p *testbed.Pod, a netip.Addr) {
	t.Helper()
	args := []string{"addr", "add", a.String() + "/32", "dev", "eth0"}
	if a.Is6() {
		args = []string{"-6", "addr", "add", a.String() + "/128", "dev", "eth0", "nodad"}
	}
	if out, err := testbed.Exec(ctx, p.NS, append([]string{"ip"}, args...)...); err != nil {
		t.Fatalf("add %s to %s: %v %s", a, p.Name, err, out)
	}
}

// unused is an address of p's node subnet that no pod has.
func unused(p *testbed.Pod, like netip.Addr) netip.Addr {
	b := addr(p, like).AsSlice()
	b[len(b)-1] = 200
	a, _ := netip.AddrFromSlice(b)
	return a
}

// A pod cannot borrow another pod's address, or an unused one of its
// subnet, to get past NetworkPolicy: ingress (t and r admit only f; s
// forges f's address) and egress (s may send nothing; it forges .200),
// same node and across nodes, IPv4 and IPv6, TCP and UDP. Its own
// addresses, the node's traffic and Service (DNAT) traffic still pass;
// with --anti-spoofing=false the forged packets arrive, so the test can
// fail.
func TestAntiSpoofing(t *testing.T) {
	w := newSpoofWorld(t)
	ctx := testCtx(t, 5*time.Minute)
	s, f, tgt, r := w.pods["s"], w.pods["f"], w.pods["t"], w.pods["r"]
	for _, like := range []netip.Addr{f.IP, f.IP6} {
		claim(ctx, t, s, addr(f, like))
		claim(ctx, t, s, unused(s, like))
	}
	// The policies are loaded once f reaches t and s's own address does
	// not.
	deadline := time.Now().Add(10 * time.Second)
	for w.arrived(ctx, f, f.IP, tgt, tgt.IP, "udp") == 0 || w.arrived(ctx, s, s.IP, tgt, tgt.IP, "udp") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("policies not in force after 10s")
		}
	}
	type attack struct {
		what   string
		to     *testbed.Pod
		forged func(like netip.Addr) netip.Addr
	}
	attacks := []attack{
		{"ingress bypass, same node (f's address to t)", tgt, func(l netip.Addr) netip.Addr { return addr(f, l) }},
		{"ingress bypass, cross node (f's address to r)", r, func(l netip.Addr) netip.Addr { return addr(f, l) }},
		{"egress bypass, same node (unused address to q)", w.pods["q"], func(l netip.Addr) netip.Addr { return unused(s, l) }},
		{"egress bypass, cross node (unused address to o)", w.pods["o"], func(l netip.Addr) netip.Addr { return unused(s, l) }},
	}
	check := func(t *testing.T, wantThrough bool) {
		for _, a := range attacks {
			for _, like := range []netip.Addr{f.IP, f.IP6} {
				for _, proto := range []string{"tcp", "udp"} {
					src, dst := a.forged(like), addr(a.to, like)
					got := w.arrived(ctx, s, src, a.to, dst, proto)
					if wantThrough && got == 0 {
						t.Errorf("%s, %s %s -> %s: nothing arrived with anti-spoofing off, so this check proves nothing", a.what, proto, src, dst)
					}
					if !wantThrough && got != 0 {
						t.Errorf("%s, %s %s -> %s: %d packets arrived", a.what, proto, src, dst, got)
					}
				}
			}
		}
	}
	t.Run("forged sources dropped", func(t *testing.T) {
		check(t, false)
		name := fmt.Sprintf(`flannel_spoofed_packets_dropped_total{namespace="testbed",pod=%q}`, s.Name)
		if v, err := metric(ctx, s.Node, name); err != nil || v == 0 {
			t.Errorf("%s = %v (%v), want > 0", name, v, err)
		}
		// The policy drop log names the sender by its port, with the
		// forged address it used.
		recs, err := nodeDrops(ctx, s.Node)
		if err != nil {
			t.Fatal(err)
		}
		forged := addr(f, f.IP)
		if !slices.ContainsFunc(recs, func(r droplog.Record) bool {
			return r.Reason == "anti-spoofing" && r.Source.Pod == s.Name && r.Source.IP == forged
		}) {
			t.Errorf("no anti-spoofing record from %s with source %s among %d records: %+v", s.Name, forged, len(recs), recs)
		}
	})
	t.Run("own addresses, the node and Services pass", func(t *testing.T) {
		for _, like := range []netip.Addr{f.IP, f.IP6} {
			for _, to := range []*testbed.Pod{tgt, r} {
				if n := w.arrived(ctx, f, addr(f, like), to, addr(to, like), "tcp"); n == 0 {
					t.Errorf("f -> %s from its own address %s: nothing arrived", to.Name, addr(f, like))
				}
			}
		}
		if err := ping(ctx, f.Node.NS, f.IP, 56, false); err != nil {
			t.Errorf("node -> pod f: %v", err)
		}
		// kube-proxy's translation, as a DNAT rule on f's node: f reaches
		// r through a ClusterIP, from its own address.
		svc := "add table ip svc; add chain ip svc pre { type nat hook prerouting priority dstnat; }; " +
			fmt.Sprintf("add rule ip svc pre ip daddr 10.96.0.10 tcp dport 7000 dnat to %s", r.IP)
		if out, err := testbed.Exec(ctx, f.Node.NS, "nft", svc); err != nil {
			t.Fatalf("service rule: %v %s", err, out)
		}
		if n := w.arrived(ctx, f, f.IP, r, netip.MustParseAddr("10.96.0.10"), "tcp"); n == 0 {
			t.Error("f -> ClusterIP 10.96.0.10 (DNAT to r): nothing arrived at r")
		}
	})
	t.Run("records follow pods", func(t *testing.T) {
		dir := antispoof.RecordDir(s.Node.SubnetFile)
		recs, err := antispoof.ReadRecords(dir)
		if err != nil || len(recs) != 4 {
			t.Fatalf("records on %s: %d (%v), want 4", s.Node.Name, len(recs), err)
		}
		gone, err := w.AddPod(ctx, s.Node)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.RemovePod(ctx, gone); err != nil {
			t.Fatal(err)
		}
		if recs, _ := antispoof.ReadRecords(dir); len(recs) != 4 {
			t.Errorf("after a pod came and went: %d records, want 4", len(recs))
		}
	})
	t.Run("with anti-spoofing off the attacks work", func(t *testing.T) {
		n := s.Node
		if err := w.StopFlanneld(n); err != nil {
			t.Fatal(err)
		}
		run := npRun(w.kubeCluster, true)
		run.netConf = netConf(t, n, dualStackConf)
		run.args = append(run.args, "--anti-spoofing=false")
		started := time.Now()
		w.with(t).startKube(n, run)
		w.with(t).waitReady([]*testbed.Node{n}, started, time.Minute)
		if out, err := testbed.Exec(ctx, n.NS, "nft", "list", "table", "bridge", antispoof.TableName); err == nil {
			t.Errorf("table still there with --anti-spoofing=false:\n%s", out)
		}
		check(t, true)
	})
	if t.Failed() {
		for _, n := range w.Nodes {
			out, _ := testbed.Exec(ctx, n.NS, "nft", "list", "table", "bridge", antispoof.TableName)
			t.Logf("%s:\n%s", n.Name, out)
		}
		_ = os.Stdout.Sync()
	}
}
