//go:build kubernetes

package k8s

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// backendCase is one row of upstream's e2e matrix.
type backendCase struct {
	name  string
	lab   string // lab name (at most 6 characters)
	nodes int
	args  []string
	dual  bool
	// maxLoss bounds the pod-to-pod loss during a rollout restart of the
	// DaemonSet. The kernel data paths (VXLAN, host-gw) carry on while
	// flanneld restarts; udp and userspace WireGuard forward in flanneld
	// itself, so they stop from the old pod's exit until the new pod runs.
	maxLoss time.Duration
}

func matrix() []backendCase {
	const kernel, userspace = time.Second, 30 * time.Second
	return []backendCase{
		{name: "vxlan", lab: "kvx", nodes: 3, maxLoss: kernel},
		{name: "vxlan-nftables", lab: "knf", nodes: 2, args: []string{"--nftables"}, maxLoss: kernel},
		{name: "host-gw", lab: "khg", nodes: 2, args: []string{"--backend", "host-gw"}, maxLoss: kernel},
		{name: "udp", lab: "kud", nodes: 2, args: []string{"--backend", "udp"}, maxLoss: userspace},
		{name: "wireguard", lab: "kwg", nodes: 2, args: []string{"--backend", "wireguard"}, maxLoss: userspace},
		{name: "vxlan-dual-stack", lab: "kds", nodes: 2, args: []string{"--dual-stack"}, dual: true, maxLoss: kernel},
		{name: "host-gw-dual-stack", lab: "khd", nodes: 2, args: []string{"--backend", "host-gw", "--dual-stack"}, dual: true, maxLoss: kernel},
		// The eBPF fast path under a real kubelet and kube-proxy: lab
		// check fails a pod without the program; Service and hostPort
		// replies, which conntrack translates, must take the kernel path.
		{name: "host-gw-ebpf", lab: "khe", nodes: 2, args: []string{"--backend", "host-gw", "--datapath", "ebpf"}, maxLoss: kernel},
	}
}

// TestBackends runs upstream's e2e checks on each backend: the DaemonSet
// Ready on every node (lab up waits for it), each node's subnet inside its
// podCIDR, pods on different nodes reaching each other, a ClusterIP Service
// found by name, a hostPort, a recreated pod reachable again, a rollout restart of the
// DaemonSet that keeps every FLANNEL_SUBNET, and pod-to-pod throughput
// next to the underlay's.
func TestBackends(t *testing.T) {
	for _, c := range matrix() {
		t.Run(c.name, func(t *testing.T) {
			l := upLab(t, c.lab, c.nodes, c.args...)
			under := l.checkSubnets(t, c.dual)
			pods := l.deployWeb(c.dual)
			l.podToPod(t, pods)
			l.check(t)
			l.serviceByName(t, pods["n1"], pods["n2"])
			l.hostPortOf(t, pods["n1"], pods["n2"], under["n2"])
			if t.Failed() {
				t.FailNow()
			}
			pods["n2"] = l.recreate(t, "n2")
			l.reach(t, pods["n1"], pods["n2"], pods["n2"].ips[0])
			l.serviceByName(t, pods["n1"], pods["n2"])
			l.rolloutRestart(t, pods, c.maxLoss)
			l.podToPod(t, pods)
			l.throughput(t, c.name, pods["n1"], pods["n2"], under["n1"], under["n2"])
		})
	}
}

// checkSubnets: every node's flanneld wrote a FLANNEL_SUBNET inside the
// podCIDR Kubernetes gave the node (and the IPv6 one under dual stack). It
// returns the nodes' underlay addresses.
func (l *kubeLab) checkSubnets(t *testing.T, dual bool) map[string]netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodes, err := l.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	under := map[string]netip.Addr{}
	for _, n := range nodes.Items {
		env := l.subnetEnv(n.Name)
		sub, err := netip.ParsePrefix(flannelSubnet(env))
		if err != nil || len(n.Spec.PodCIDRs) == 0 || !netip.MustParsePrefix(n.Spec.PodCIDRs[0]).Contains(sub.Addr()) {
			t.Errorf("node %s: FLANNEL_SUBNET %q outside podCIDRs %v", n.Name, flannelSubnet(env), n.Spec.PodCIDRs)
		}
		if dual && (len(n.Spec.PodCIDRs) != 2 || !strings.Contains(env, "FLANNEL_IPV6_SUBNET=")) {
			t.Errorf("node %s: dual stack, but podCIDRs %v and subnet.env:\n%s", n.Name, n.Spec.PodCIDRs, env)
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP && ip.Is4() {
				under[n.Name] = ip
			}
		}
	}
	if len(under) != len(l.nodes) {
		t.Fatalf("nodes' internal addresses: %v", under)
	}
	return under
}

// TestHelmNetworkPolicy installs flannel with the chart and network policy
// on: pods reach each other until a NetworkPolicy isolates one, and again
// once it is deleted.
func TestHelmNetworkPolicy(t *testing.T) {
	l := upLab(t, "khm", 2, "--helm", "--network-policy")
	pods := l.deployWeb(false)
	l.podToPod(t, pods)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deny := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-web-n2", Namespace: testNS},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"node": "n2"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if _, err := l.cs.NetworkingV1().NetworkPolicies(testNS).Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dst := pods["n2"].ips[0]
	waitFor(t, 10*time.Second, "web-n2 isolated", func() bool {
		_, err := l.dial(pods["n1"], dst.String(), netexecPort)
		return err != nil
	})
	if err := l.cs.NetworkingV1().NetworkPolicies(testNS).Delete(ctx, deny.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "web-n2 reachable again", func() bool {
		got, err := l.dial(pods["n1"], dst.String(), netexecPort)
		return err == nil && got == "web-n2"
	})
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
