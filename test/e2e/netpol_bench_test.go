package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// BenchmarkNetworkPolicyThroughput measures pod-to-pod iperf3 TCP
// throughput across two nodes running flanneld --network-policy, with no
// policy and with 500 policies that isolate both pods (250 on the
// server's ingress, 250 on the client's egress), alternating in one run,
// and reports the ratio. Not part of CI; run it with -benchtime=1x.
func BenchmarkNetworkPolicyThroughput(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (scripts/setup.sh installs it)")
	}
	l, client, server := newPerfCluster(b)
	ctx := testCtx(b, 20*time.Minute)
	var none, with []float64
	// Alternating, five times each: the machine's load drifts.
	for i := 0; i < b.N*10; i++ {
		loaded := i%2 == 1
		l.change(ctx, func() { l.perfPolicies(ctx, loaded) })
		// A collection is deleted object by object: wait for the last.
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if err = isolated(ctx, client, server, loaded); err == nil {
				break
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		bps, err := iperf(ctx, l.Testbed, client.tbPod.NS, server.tbPod.NS, server.tbPod.IP)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("round %d, %v policies loaded: %.2f Gbit/s", i, map[bool]int{false: 0, true: 500}[loaded], bps/1e9)
		if loaded {
			with = append(with, bps)
		} else {
			none = append(none, bps)
		}
	}
	ratio, medRatio := mean(with)/mean(none), median(with)/median(none)
	b.ReportMetric(median(none)/1e9, "none-median-Gbit/s")
	b.ReportMetric(median(with)/1e9, "500-policies-median-Gbit/s")
	b.ReportMetric(medRatio, "median-ratio")
	b.ReportMetric(ratio, "mean-ratio")
	fmt.Printf("pod-to-pod iperf3 over %d rounds each: median %.2f Gbit/s without policies, %.2f with 500 (ratio %.3f); mean %.2f and %.2f (ratio %.3f)\n",
		len(none), median(none)/1e9, median(with)/1e9, medRatio, mean(none)/1e9, mean(with)/1e9, ratio)
}

// isolated checks that the policies are in force: a port nothing listens
// on answers with a reset when traffic passes, and not at all when the
// server's ingress policy drops it.
func isolated(ctx context.Context, client, server *npPod, want bool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := testbed.DialInNamespace(ctx, client.tbPod.NS, "tcp", netip.AddrPortFrom(server.tbPod.IP, 9).String())
	if err == nil {
		conn.Close()
		return fmt.Errorf("something listens on %s:9", server)
	}
	dropped := errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "i/o timeout")
	if dropped != want {
		return fmt.Errorf("policies loaded=%v but a connection to %s:9 was dropped=%v (%v)", want, server, dropped, err)
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// newPerfCluster: two nodes, namespace perf with a client pod on node 0 and a
// server pod on node 1.
func newPerfCluster(b *testing.B) (*npCluster, *npPod, *npPod) {
	l, pods := newPerfPods(b, "client", "server")
	return l, pods[0], pods[1]
}

// newPerfPods makes the testbed with the named pods, alternately on node 0 and
// node 1.
func newPerfPods(b *testing.B, names ...string) (*npCluster, []*npPod) {
	k := newKubeCluster(b, "npperf", 2)
	ctx := testCtx(b, 3*time.Minute)
	for _, n := range k.Nodes {
		k.createNode(ctx, n.Name, podCIDR(n.Index))
	}
	k.startReady(k.Nodes, npRun(k, true))
	l := &npCluster{kubeCluster: k}
	if _, err := k.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "perf"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	var pods []*npPod
	for i, name := range names {
		node := k.Nodes[i%2]
		lp, err := k.AddPod(ctx, node)
		if err != nil {
			b.Fatal(err)
		}
		p := &npPod{ns: "perf", name: name, tbPod: lp}
		l.createPodObject(ctx, p, node.Name)
		pods = append(pods, p)
	}
	return l, pods
}

// BenchmarkNetworkPolicyThroughputSideBySide runs two iperf3 flows at the
// same time, so the machine's load weighs on both alike: client -> server,
// both isolated by the 500 policies, and client2 -> server2, which no
// policy selects. It reports the median of the per-round ratios.
func BenchmarkNetworkPolicyThroughputSideBySide(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (scripts/setup.sh installs it)")
	}
	l, pods := newPerfPods(b, "client", "server", "client2", "server2")
	ctx := testCtx(b, 20*time.Minute)
	l.change(ctx, func() { l.perfPolicies(ctx, true) })
	for _, c := range []struct {
		client, server *npPod
		isolated       bool
	}{{pods[0], pods[1], true}, {pods[2], pods[3], false}} {
		if err := isolated(ctx, c.client, c.server, c.isolated); err != nil {
			b.Fatal(err)
		}
	}
	var ratios []float64
	for i := 0; i < b.N*5; i++ {
		var with, none float64
		var g errgroup.Group
		g.Go(func() (err error) {
			with, err = iperf(ctx, l.Testbed, pods[0].tbPod.NS, pods[1].tbPod.NS, pods[1].tbPod.IP)
			return
		})
		g.Go(func() (err error) {
			none, err = iperf(ctx, l.Testbed, pods[2].tbPod.NS, pods[3].tbPod.NS, pods[3].tbPod.IP)
			return
		})
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		b.Logf("round %d: %.2f Gbit/s under 500 policies, %.2f Gbit/s under none, ratio %.3f", i, with/1e9, none/1e9, with/none)
		ratios = append(ratios, with/none)
	}
	b.ReportMetric(median(ratios), "median-ratio")
	fmt.Printf("side by side over %d rounds: median ratio %.3f (500 policies / none)\n", len(ratios), median(ratios))
}

// perfPolicies creates the 500 policies, or deletes them all. Among them,
// one lets the client reach the server on 5201 and one lets it send there.
func (l *npCluster) perfPolicies(ctx context.Context, loaded bool) {
	pols := l.cs.NetworkingV1().NetworkPolicies("perf")
	if !loaded {
		if err := pols.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			l.t.Fatal(err)
		}
		return
	}
	var g errgroup.Group
	g.SetLimit(8)
	for i := range 500 {
		g.Go(func() error {
			_, err := pols.Create(ctx, perfPolicy(i), metav1.CreateOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		l.t.Fatal(err)
	}
}

func perfPolicy(i int) *networkingv1.NetworkPolicy {
	port := pnum(corev1.ProtocolTCP, 5201)
	other := pnum(corev1.ProtocolTCP, 10000+i)
	peer := func(app string) []npPeer { return []npPeer{{PodSelector: lsel("pod", app)}} }
	spec := npSpec{PodSelector: *lsel("pod", "server"), Ingress: []npIn{{From: peer(fmt.Sprintf("client-%d", i)), Ports: []npPort{other}}}}
	if i%2 == 1 {
		spec = npSpec{PodSelector: *lsel("pod", "client"), PolicyTypes: npEgress,
			Egress: []npEg{{To: peer(fmt.Sprintf("server-%d", i)), Ports: []npPort{other}}}}
	}
	switch i {
	case 0:
		spec.Ingress[0] = npIn{From: peer("client"), Ports: []npPort{port}}
	case 1:
		spec.Egress[0] = npEg{To: peer("server"), Ports: []npPort{port}}
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%03d", i)}, Spec: spec}
}

// BenchmarkNetworkPolicyMemory runs flanneld --network-policy on one node
// of a cluster of 5000 pods (100 of them on that node) in 50 namespaces
// and 1000 policies, and reports its memory and the time of its last
// sync. Not part of CI.
func BenchmarkNetworkPolicyMemory(b *testing.B) {
	k := newKubeCluster(b, "npmem", 1)
	ctx := testCtx(b, 20*time.Minute)
	n := k.Nodes[0]
	k.createNode(ctx, n.Name, podCIDR(n.Index))
	k.startReady(k.Nodes, npRun(k, true))
	l := &npCluster{kubeCluster: k}
	begin := time.Now()
	if err := scaleObjects(ctx, k.cs, n.Name, podCIDR(n.Index)); err != nil {
		b.Fatal(err)
	}
	b.Logf("created 5000 pods and 1000 policies in %s", time.Since(begin).Round(time.Second))
	took := l.change(ctx, func() { l.setLabels(ctx, "ns0", map[string]string{"team": "t0", "touched": "yes"}) })
	rss := procRSS(b, k.Flanneld(n).Pid)
	heap, _ := metric(ctx, n, "go_memstats_heap_inuse_bytes")
	sum, _ := metric(ctx, n, "flannel_policy_sync_duration_seconds_sum")
	count, _ := metric(ctx, n, "flannel_policy_sync_duration_seconds_count")
	active, _ := metric(ctx, n, "flannel_policy_active")
	tbl, _ := nftTable(ctx, n)
	b.ReportMetric(rss/(1<<20), "flanneld-RSS-MiB")
	b.ReportMetric(heap/(1<<20), "heap-inuse-MiB")
	fmt.Printf("flanneld with 5000 pods, 1000 policies (%v selecting its 100 pods): RSS %.1f MiB, Go heap in use %.1f MiB; a label change synced in %s; %v syncs took %.3fs on average; table %d lines\n",
		active, rss/(1<<20), heap/(1<<20), took.Round(time.Millisecond), count, sum/count, strings.Count(tbl, "\n"))
}

func procRSS(b *testing.B, pid int) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// scaleObjects creates 50 namespaces, 5000 pods (pod i: namespace ns<i%50>,
// app<(i/50)%20>; the first 100 on node local in cidr, the others on 49
// other nodes) and 1000 policies, as internal/netpol's scale test does.
func scaleObjects(ctx context.Context, cs kubernetes.Interface, local string, cidr netip.Prefix) error {
	for i := range 50 {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%5)}}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	var g errgroup.Group
	g.SetLimit(16)
	for i := range 5000 {
		g.Go(func() error { return scalePod(ctx, cs, i, local, cidr) })
	}
	for i := range 1000 {
		g.Go(func() error {
			_, err := cs.NetworkingV1().NetworkPolicies(fmt.Sprintf("ns%d", (i/20)%50)).Create(ctx, scalePolicy(i), metav1.CreateOptions{})
			return err
		})
	}
	return g.Wait()
}

func scalePod(ctx context.Context, cs kubernetes.Interface, i int, local string, cidr netip.Prefix) error {
	node, ip := fmt.Sprintf("node-%d", i/100), netip.AddrFrom4([4]byte{10, 244, byte(100 + i/100), byte(i%100 + 2)})
	if i < 100 {
		a := cidr.Addr().As4()
		a[3] = byte(i + 100)
		node, ip = local, netip.AddrFrom4(a)
	}
	ports := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", (i/50)%20)}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "x", Ports: ports}}},
	}
	created, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	_, err = cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func scalePolicy(i int) *networkingv1.NetworkPolicy {
	app := func(k int) *metav1.LabelSelector { return lsel("app", fmt.Sprintf("app%d", (i+k)%20)) }
	spec := npSpec{PodSelector: *app(0), Ingress: []npIn{
		{From: []npPeer{{PodSelector: app(1)}, {PodSelector: app(2)}}, Ports: []npPort{pnum(corev1.ProtocolTCP, 8080+i%3)}},
		{From: []npPeer{{NamespaceSelector: lsel("team", fmt.Sprintf("t%d", i%5)), PodSelector: app(3)}}, Ports: []npPort{pnamed("http")}},
		{From: []npPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", i%256)}}}}},
	}}
	if i%5 == 0 {
		spec.Egress = []npEg{{To: []npPeer{{NamespaceSelector: lsel()}}, Ports: []npPort{pnum(corev1.ProtocolUDP, 53)}}}
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np%d", i)}, Spec: spec}
}
