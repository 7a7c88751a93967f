package netpol

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/testbed"
)

// inNetns runs fn in a fresh network namespace (removed afterwards), on a
// thread that stays there, so the nft processes fn starts act on it.
func inNetns(t *testing.T, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary (scripts/setup.sh installs nftables)")
	}
	ns := fmt.Sprintf("fl-npunit-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if err := testbed.InNamespace(ns, fn); err != nil {
		t.Fatal(err)
	}
}

func nftList(t *testing.T) string {
	out, err := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		t.Errorf("nft list table: %v %s", err, out)
	}
	return string(out)
}

// The table loads into a real kernel, a later sync drops what is no longer
// needed, and Remove deletes it all.
func TestTableSyncAndRemove(t *testing.T) {
	w := newWorld()
	w.policy("x", "deny", np{PodSelector: *sel(), PolicyTypes: both})
	w.policy("x", "allow-b", np{PodSelector: *sel("pod", "a"), Ingress: []inRule{{From: []peer{{PodSelector: sel("pod", "b")}},
		Ports: []pport{{Port: port(80)}, {Port: named("serve-81-udp"), Protocol: proto(corev1.ProtocolUDP)}}}}})
	w.policy("y", "egress", np{PodSelector: *sel("pod", "c"), Egress: []egRule{{To: []peer{
		{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16", Except: []string{"10.244.3.0/24"}}}}}}})
	inNetns(t, func() error {
		ctx := context.Background()
		tbl, err := NewTable()
		if err != nil {
			return err
		}
		if err := tbl.Sync(ctx, Compile(w.in, nil)); err != nil {
			return err
		}
		got := nftList(t)
		for _, want := range []string{
			"10.244.1.11 . tcp . 80", "10.244.1.11 . udp . 81", // x/a from x/b
			"10.244.0.0-10.244.2.255", // y/c egress
			"ip daddr vmap @ingress4", "ct state established,related accept",
			`10.244.1.10 : "in/x/a"`, `10.244.2.12 : "eg/y/c"`, "counter eg/x/b",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("table lacks %q:\n%s", want, got)
			}
		}
		w.in.Policies = w.in.Policies[2:]
		if err := tbl.Sync(ctx, Compile(w.in, nil)); err != nil {
			return fmt.Errorf("second sync: %w", err)
		}
		got = nftList(t)
		for _, gone := range []string{"in/x/a", "eg-1", "in-1", "10.244.1.11 . tcp"} {
			if strings.Contains(got, gone) {
				t.Errorf("after removing policies the table still has %q:\n%s", gone, got)
			}
		}
		// A restarted flanneld starts with a fresh Table and must take
		// over what the last one left.
		if err := (&Table{nft: tbl.nft}).Sync(ctx, Compile(w.in, nil)); err != nil {
			return fmt.Errorf("sync after restart: %w", err)
		}
		if removed, err := tbl.Remove(ctx); err != nil || !removed {
			return fmt.Errorf("remove: %v %v", removed, err)
		}
		if out, err := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput(); err == nil {
			t.Errorf("table still there after Remove:\n%s", out)
		}
		removed, err := tbl.Remove(ctx)
		if err != nil || removed {
			t.Errorf("second Remove: %v %v, want nothing to do", removed, err)
		}
		return nil
	})
}

// scaleWorld is a cluster of pods pods in 50 namespaces and policies
// policies: each selects one app of a namespace and lets in two other
// apps of it on a port, one team's namespaces on another, and a CIDR; a
// fifth of them also restrict egress.
func scaleWorld(pods, policies int) Input {
	var in Input
	const namespaces, apps = 50, 20
	for i := range namespaces {
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%5)}}})
	}
	for i := range pods {
		ip := netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(i%250 + 2)})
		in.Pods = append(in.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("p%d", i),
				Labels: map[string]string{"app": fmt.Sprintf("app%d", (i/namespaces)%apps)}},
			Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("node%d", i/250), Containers: []corev1.Container{{Ports: servePorts(8080)}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String()},
		})
	}
	for i := range policies {
		app := func(k int) *metav1.LabelSelector { return sel("app", fmt.Sprintf("app%d", (i+k)%apps)) }
		spec := np{PodSelector: *app(0), Ingress: []inRule{
			{From: []peer{{PodSelector: app(1)}, {PodSelector: app(2)}}, Ports: []pport{{Port: port(8080 + i%3)}}},
			{From: []peer{{NamespaceSelector: sel("team", fmt.Sprintf("t%d", i%5)), PodSelector: app(3)}}, Ports: []pport{{Port: named("serve-8080-tcp")}}},
			{From: []peer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", i%256)}}}}},
		}}
		if i%5 == 0 {
			spec.Egress = []egRule{{To: []peer{{NamespaceSelector: sel()}}, Ports: []pport{{Port: port(53), Protocol: proto(corev1.ProtocolUDP)}}}}
		}
		in.Policies = append(in.Policies, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", (i/apps)%namespaces), Name: fmt.Sprintf("np%d", i)}, Spec: spec})
	}
	return in
}

// cpuTime is the user+sys time of this process and its waited-for
// children (nft) so far.
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	var total time.Duration
	for _, tv := range []syscall.Timeval{self.Utime, self.Stime, kids.Utime, kids.Stime} {
		total += time.Duration(tv.Nano())
	}
	return total
}

// 5000 pods and 1000 policies compile and load in under 2 s, for a node
// with 250 of the pods and, as the worst case, for one running all 5000.
func TestScaleCompileAndLoad(t *testing.T) {
	in := scaleWorld(5000, 1000)
	for _, c := range []struct {
		name   string
		target func(*corev1.Pod) bool
	}{
		{"250 local pods", func(p *corev1.Pod) bool { return p.Spec.NodeName == "node3" }},
		{"all 5000 pods local", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			inNetns(t, func() error {
				tbl, err := NewTable()
				if err != nil {
					return err
				}
				cpu0 := cpuTime()
				start := time.Now()
				m := Compile(in, c.target)
				compiled := time.Since(start)
				tx, _ := tbl.transaction(m, newObjects())
				if err := tbl.nft.Run(context.Background(), tx); err != nil {
					return err
				}
				took, cpu := time.Since(start), cpuTime()-cpu0
				classes := layout(m)
				t.Logf("%s: %d isolated pods (ingress) in %d+%d classes, %d policies select them, %d nft operations: compile %s, compile+load %s wall, %s CPU (flanneld+nft, user+sys)",
					c.name, len(m.Rules[Ingress]), len(classes[0]), len(classes[1]), m.PolicyCount, tx.NumOperations(),
					compiled.Round(time.Millisecond), took.Round(time.Millisecond), cpu.Round(time.Millisecond))
				// The CPU time is what the work costs; the wall time also
				// counts waiting for a CPU on a shared machine.
				if cpu > 2*time.Second {
					t.Errorf("compile and load took %s of CPU, want under 2s", cpu)
				}
				return nil
			})
		})
	}
}
