package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/netpol"
)

// The Kubernetes NetworkPolicy e2e suite's world: namespaces x, y, z
// (labelled ns=<name>), pods a, b, c in each (labelled pod=<name>), each
// serving TCP and UDP on ports 80 and 81 under the container port names
// serve-<port>-<proto>. Here pod a of every namespace runs on node 0, b
// on node 1, c on node 2, so the matrix has same-node pairs (x/a, y/a,
// z/a) and cross-node pairs.
var (
	npNamespaces = []string{"x", "y", "z"}
	npPodNames   = []string{"a", "b", "c"}
	npPorts      = []int{80, 81}
	npProtos     = []string{"tcp", "udp"}
)

// npPod is one pod of the world: its Kubernetes name and its testbed pod.
type npPod struct {
	ns, name string
	tbPod    *testbed.Pod
}

func (p *npPod) String() string { return p.ns + "/" + p.name }

// is reports whether p is one of the "ns/name" (or "ns/*") patterns.
func (p *npPod) is(patterns ...string) bool {
	for _, pat := range patterns {
		ns, name, _ := strings.Cut(pat, "/")
		if (ns == "*" || ns == p.ns) && (name == "*" || name == p.name) {
			return true
		}
	}
	return false
}

// npCluster is the kube cluster with the world in it.
type npCluster struct {
	*kubeCluster
	pods       []*npPod
	servers    []io.Closer
	kubeconfig string // flanneld's
}

func (l *npCluster) pod(s string) *npPod {
	for _, p := range l.pods {
		if p.String() == s {
			return p
		}
	}
	l.t.Fatalf("no pod %s", s)
	return nil
}

// createWorld makes the namespaces, the testbed pods (through CNI), their Pod
// objects with status.podIP set as a kubelet would, and starts the
// servers in every pod.
func (l *npCluster) createWorld(ctx context.Context) {
	l.t.Helper()
	for _, ns := range npNamespaces {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}}
		if _, err := l.cs.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			l.t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	for i, name := range npPodNames {
		node := l.Nodes[i]
		for _, ns := range npNamespaces {
			lp, err := l.AddPod(ctx, node)
			if err != nil {
				l.t.Fatal(err)
			}
			p := &npPod{ns: ns, name: name, tbPod: lp}
			l.createPodObject(ctx, p, node.Name)
			l.serve(p)
			l.pods = append(l.pods, p)
		}
	}
	l.t.Cleanup(func() {
		for _, s := range l.servers {
			s.Close()
		}
	})
}

func (l *npCluster) createPodObject(ctx context.Context, p *npPod, node string) {
	l.t.Helper()
	var ports []corev1.ContainerPort
	for _, port := range npPorts {
		for _, proto := range npProtos {
			ports = append(ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, proto),
				ContainerPort: int32(port), Protocol: corev1.Protocol(strings.ToUpper(proto))})
		}
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: map[string]string{"pod": p.name}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{
			{Name: "server", Image: "agnhost", Ports: ports}}},
	}
	created, err := l.cs.CoreV1().Pods(p.ns).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		l.t.Fatalf("create pod %s: %v", p, err)
	}
	ip := p.tbPod.IP.String()
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := l.cs.CoreV1().Pods(p.ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		l.t.Fatalf("set status.podIP of pod %s: %v", p, err)
	}
}

// serve listens on TCP and UDP 80 and 81 inside the pod: TCP connections
// are accepted and closed, UDP datagrams echoed.
func (l *npCluster) serve(p *npPod) {
	l.t.Helper()
	err := testbed.InNamespace(p.tbPod.NS, func() error {
		for _, port := range npPorts {
			addr := fmt.Sprintf(":%d", port)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				ln.Close()
				return err
			}
			l.servers = append(l.servers, ln, pc)
			go acceptAndClose(ln)
			go echo(pc)
		}
		return nil
	})
	if err != nil {
		l.t.Fatalf("servers in pod %s: %v", p, err)
	}
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func echo(pc net.PacketConn) {
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

// npProbeTimeout: an allowed probe answers within milliseconds; a dropped
// one is given this long.
const npProbeTimeout = time.Second

// probe tries one new connection (TCP) or exchange (UDP) from p to q.
func probe(ctx context.Context, from *testbed.Pod, to netip.Addr, port int, proto string) bool {
	ctx, cancel := context.WithTimeout(ctx, npProbeTimeout)
	defer cancel()
	addr := net.JoinHostPort(to.String(), fmt.Sprint(port))
	conn, err := testbed.DialInNamespace(ctx, from.NS, proto, addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if proto == "tcp" {
		return true
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 8)
	n, err := conn.Read(buf)
	return err == nil && string(buf[:n]) == "ping"
}

// expectFn is a case's truth table: may from open a connection to to?
type expectFn func(from, to *npPod, port int, proto string) bool

func allowAll(_, _ *npPod, _ int, _ string) bool { return true }

type npProbe struct {
	from, to *npPod
	port     int
	proto    string
}

func (p npProbe) String() string { return fmt.Sprintf("%s -> %s %d/%s", p.from, p.to, p.port, p.proto) }

// matrix probes every ordered pair of distinct pods on every port and
// protocol at once and returns the probes whose outcome differs from want.
// (A pod talking to itself never leaves its namespace; like the upstream
// suite, the matrix leaves loopback out.)
func (l *npCluster) matrix(ctx context.Context, want expectFn) (wrong []string, total int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, from := range l.pods {
		for _, to := range l.pods {
			if from == to {
				continue
			}
			for _, port := range npPorts {
				for _, proto := range npProtos {
					total++
					pr := npProbe{from, to, port, proto}
					wg.Go(func() {
						got, exp := probe(ctx, from.tbPod, to.tbPod.IP, port, proto), want(from, to, port, proto)
						if got != exp {
							mu.Lock()
							wrong = append(wrong, fmt.Sprintf("%s: allowed=%v, want %v", pr, got, exp))
							mu.Unlock()
						}
					})
				}
			}
		}
	}
	wg.Wait()
	slices.Sort(wrong)
	return wrong, total
}

// syncCounts reads each node's count of completed policy syncs.
func (l *npCluster) syncCounts(ctx context.Context) []float64 {
	l.t.Helper()
	out := make([]float64, len(l.Nodes))
	for i, n := range l.Nodes {
		v, err := metric(ctx, n, "flannel_policy_sync_duration_seconds_count")
		if err != nil {
			l.t.Fatal(err)
		}
		out[i] = v
	}
	return out
}

// waitSynced waits until every node has finished a sync after before was
// read and returns how long that took from since.
func (l *npCluster) waitSynced(ctx context.Context, before []float64, since time.Time) time.Duration {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i, n := range l.Nodes {
		for {
			v, err := metric(ctx, n, "flannel_policy_sync_duration_seconds_count")
			if err == nil && v > before[i] {
				break
			}
			if time.Now().After(deadline) {
				l.t.Fatalf("node %s did not sync network policy within 10s (count %v, err %v)", n.Name, v, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(since)
}

// change applies fn (API writes) and waits until every node has synced
// after it.
func (l *npCluster) change(ctx context.Context, fn func()) time.Duration {
	l.t.Helper()
	before := l.syncCounts(ctx)
	start := time.Now()
	fn()
	return l.waitSynced(ctx, before, start)
}

// check asserts the full matrix. A sync that began before the last change
// may still be landing, so a mismatch is probed again, twice at most.
func (l *npCluster) check(ctx context.Context, want expectFn) {
	l.t.Helper()
	var wrong []string
	var total int
	for round := 1; round <= 3; round++ {
		if wrong, total = l.matrix(ctx, want); len(wrong) == 0 {
			if round > 1 {
				l.t.Logf("matrix of %d probes right in round %d", total, round)
			}
			return
		}
	}
	l.t.Errorf("%d of %d probes wrong:\n  %s", len(wrong), total, strings.Join(wrong, "\n  "))
}

func (l *npCluster) createPolicy(ctx context.Context, ns, name string, spec networkingv1.NetworkPolicySpec) {
	l.t.Helper()
	pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	if _, err := l.cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		l.t.Fatalf("create networkpolicy %s/%s: %v", ns, name, err)
	}
}

func (l *npCluster) updatePolicy(ctx context.Context, ns, name string, spec networkingv1.NetworkPolicySpec) {
	l.t.Helper()
	pol, err := l.cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		pol.Spec = spec
		_, err = l.cs.NetworkingV1().NetworkPolicies(ns).Update(ctx, pol, metav1.UpdateOptions{})
	}
	if err != nil {
		l.t.Fatalf("update networkpolicy %s/%s: %v", ns, name, err)
	}
}

func (l *npCluster) deletePolicy(ctx context.Context, ns, name string) {
	l.t.Helper()
	if err := l.cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		l.t.Fatalf("delete networkpolicy %s/%s: %v", ns, name, err)
	}
}

// setLabels replaces the labels of a pod ("ns/name") or namespace ("ns")
// in one write, so no one sees a state in between.
func (l *npCluster) setLabels(ctx context.Context, obj string, lbls map[string]string) {
	l.t.Helper()
	ns, name, isPod := strings.Cut(obj, "/")
	var cur map[string]string
	if isPod {
		p, err := l.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			l.t.Fatal(err)
		}
		cur = p.Labels
	} else {
		n, err := l.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			l.t.Fatal(err)
		}
		cur = n.Labels
	}
	patch := map[string]any{}
	for k := range cur {
		if k != "kubernetes.io/metadata.name" {
			patch[k] = nil
		}
	}
	for k, v := range lbls {
		patch[k] = v
	}
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": patch}})
	var err error
	if isPod {
		_, err = l.cs.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{})
	} else {
		_, err = l.cs.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, body, metav1.PatchOptions{})
	}
	if err != nil {
		l.t.Fatalf("set labels of %s: %v", obj, err)
	}
}

// resetSynced resets and, if that changed anything, waits until every
// node has synced.
func (l *npCluster) resetSynced(ctx context.Context) {
	l.t.Helper()
	before := l.syncCounts(ctx)
	start := time.Now()
	if l.reset(ctx) {
		l.waitSynced(ctx, before, start)
	}
}

// reset deletes every policy and restores the original labels; it reports
// whether there was anything to do.
func (l *npCluster) reset(ctx context.Context) bool {
	l.t.Helper()
	changed := false
	for _, ns := range npNamespaces {
		list, err := l.cs.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			l.t.Fatal(err)
		}
		if len(list.Items) > 0 {
			changed = true
			err := l.cs.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
			if err != nil {
				l.t.Fatalf("delete networkpolicies in %s: %v", ns, err)
			}
		}
		nsObj, err := l.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			l.t.Fatal(err)
		}
		if !onlyLabels(nsObj.Labels, "ns", ns) {
			l.setLabels(ctx, ns, map[string]string{"ns": ns})
			changed = true
		}
	}
	for _, p := range l.pods {
		obj, err := l.cs.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			l.t.Fatal(err)
		}
		if !onlyLabels(obj.Labels, "pod", p.name) {
			l.setLabels(ctx, p.String(), map[string]string{"pod": p.name})
			changed = true
		}
	}
	return changed
}

// onlyLabels: lbls is {key: value}, apart from the namespace name label
// the API server maintains.
func onlyLabels(lbls map[string]string, key, value string) bool {
	n := len(lbls)
	if _, ok := lbls["kubernetes.io/metadata.name"]; ok {
		n--
	}
	return n == 1 && lbls[key] == value
}

var errNoTable = errors.New("no table")

// nftTable lists the network policy table in node n's namespace.
func nftTable(ctx context.Context, n *testbed.Node) (string, error) {
	out, err := testbed.Exec(ctx, n.NS, "nft", "list", "table", "inet", "flannel-netpol")
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return "", errNoTable
		}
		return "", fmt.Errorf("nft list table in %s: %w %s", n.NS, err, out)
	}
	return string(out), nil
}

// checkModel asserts that the model flannelctl policy explain decides
// from, compiled from what the API server holds now, gives the very table
// the traffic just gave.
func (l *npCluster) checkModel(ctx context.Context, want expectFn) {
	l.t.Helper()
	in, err := netpol.ListInput(ctx, l.cs.CoreV1().RESTClient(), l.cs.NetworkingV1().RESTClient())
	if err != nil {
		l.t.Fatal(err)
	}
	m := netpol.Compile(in, nil)
	var wrong []string
	for _, from := range l.pods {
		for _, to := range l.pods {
			for _, port := range npPorts {
				for _, proto := range npProtos {
					if from == to {
						continue
					}
					d := m.Decide(from.tbPod.IP, to.tbPod.IP, netpol.Proto(strings.ToUpper(proto)), uint16(port))
					if d.Allowed() != want(from, to, port, proto) {
						wrong = append(wrong, fmt.Sprintf("%s: model says allowed=%v", npProbe{from, to, port, proto}, d.Allowed()))
					}
				}
			}
		}
	}
	if len(wrong) > 0 {
		l.t.Errorf("the explain model disagrees with the truth table in %d places:\n  %s", len(wrong), strings.Join(wrong, "\n  "))
	}
}
