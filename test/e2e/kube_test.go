package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// flanneld with --kube-subnet-mgr against a real kube-apiserver: each node's
// subnet is its Node's pod CIDR, nodes publish themselves in annotations,
// pods on different nodes talk, a deleted Node is unprogrammed everywhere
// within 5 s, and a node joining later is reachable. A Node object without
// any annotations, labels or addresses (and one with only a pod CIDR) sits
// in the cluster throughout and must not disturb anyone.
func TestKubeSubnetManager(t *testing.T) {
	k := newKubeCluster(t, "kube1", 3)
	ctx := testCtx(t, 3*time.Minute)
	k.createNode(ctx, "bare", netip.Prefix{})
	k.createNode(ctx, "cidronly", netip.MustParsePrefix("10.244.200.0/24"))
	nodes := slices.Clone(k.Nodes)
	for _, n := range nodes {
		k.createNode(ctx, n.Name, podCIDR(n.Index))
	}
	run := kubeRun{
		kubeconfig: k.api.AdminKubeconfig,
		args:       append([]string{"--set-node-network-unavailable=true"}, metricsArgs...),
	}
	envs := k.startReady(nodes, run)
	var pods []*testbed.Pod

	if !t.Run("subnets annotations and traffic", func(t *testing.T) {
		k := k.with(t)
		for _, n := range nodes {
			cidr, got := podCIDR(n.Index), envs[n].Subnet
			if got.Bits() != cidr.Bits() || !cidr.Contains(got.Addr()) {
				t.Errorf("node %s: FLANNEL_SUBNET=%s is not in its pod CIDR %s", n.Name, got, cidr)
			}
			k.checkAnnotations(ctx, n)
		}
		pods = k.addPods(nodes)
		if pairs := allPairsPing(t, pods); pairs != 6 {
			t.Errorf("checked %d pod pairs, want 6", pairs)
		}
	}) {
		return
	}

	t.Run("network available condition", func(t *testing.T) {
		for _, n := range nodes {
			took := eventually(t, 10*time.Second, "node "+n.Name+" NetworkUnavailable=False", func() error {
				c, err := k.networkUnavailable(ctx, n.Name)
				switch {
				case err != nil:
					return err
				case c == nil:
					return errors.New("no NetworkUnavailable condition")
				case c.Status != corev1.ConditionFalse:
					return fmt.Errorf("NetworkUnavailable=%s (%s: %s)", c.Status, c.Reason, c.Message)
				}
				return nil
			})
			t.Logf("node %s: NetworkUnavailable=False %s after the check began", n.Name, took.Round(time.Millisecond))
		}
	})

	t.Run("bare node is ignored", func(t *testing.T) {
		checkPeers(t, k, nodes, len(nodes)-1)
	})

	t.Run("deleted node is unprogrammed within 5s", func(t *testing.T) {
		gone, rest := nodes[2], nodes[:2]
		subnet := podCIDR(gone.Index)
		// Stopped first, as when a machine is decommissioned: the Node object
		// is deleted after its kubelet and flanneld are gone.
		if err := k.StopFlanneld(gone); err != nil {
			t.Fatal(err)
		}
		requireProgrammed(t, rest, subnet, gone.Addr)
		if err := k.cs.CoreV1().Nodes().Delete(ctx, gone.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete node %s: %v", gone.Name, err)
		}
		requireUnprogrammed(t, rest, subnet, gone.Addr)
		checkPeers(t, k, rest, len(rest)-1)
	})

	t.Run("late node is reachable", func(t *testing.T) {
		k := k.with(t)
		late, err := k.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k.createNode(ctx, late.Name, podCIDR(late.Index))
		env := k.startReady([]*testbed.Node{late}, run)[late]
		if cidr := podCIDR(late.Index); !cidr.Contains(env.Subnet.Addr()) {
			t.Errorf("late node %s: FLANNEL_SUBNET=%s is not in its pod CIDR %s", late.Name, env.Subnet, cidr)
		}
		k.checkAnnotations(ctx, late)
		old := pods[:2]
		p := k.addPods([]*testbed.Node{late})[0]
		took := eventually(t, 10*time.Second, "old pods reach the late node's pod", func() error {
			for _, o := range old {
				if err := testbed.Ping(ctx, o.NS, p.IP, 56, false); err != nil {
					return fmt.Errorf("%s -> %s: %w", o.Name, p.Name, err)
				}
			}
			return nil
		})
		t.Logf("old pods reach %s's pod %s after %s", late.Name, p.IP, took.Round(time.Millisecond))
		if pairs := allPairsPing(t, append(slices.Clone(old), p)); pairs != 6 {
			t.Errorf("checked %d pod pairs, want 6", pairs)
		}
		checkPeers(t, k, []*testbed.Node{nodes[0], nodes[1], late}, 2)
	})
}

// checkPeers asserts that flanneld on each node still runs and follows
// exactly want peers (its flannel_peers gauge): Node objects that are not
// flannel nodes must not count, nor stop anyone.
func checkPeers(t *testing.T, k *kubeCluster, nodes []*testbed.Node, want int) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	for _, n := range nodes {
		if p := k.Flanneld(n); p == nil || !p.Running() {
			t.Errorf("flanneld on %s is not running; end of its log:\n%s", n.Name, tailFile(n.LogFile, 20))
			continue
		}
		eventually(t, 5*time.Second, fmt.Sprintf("node %s follows %d peers", n.Name, want), func() error {
			got, err := metric(ctx, n, "flannel_peers")
			if err != nil {
				return err
			}
			if int(got) != want {
				return fmt.Errorf("flannel_peers %v", got)
			}
			return nil
		})
	}
}

// flanneld authenticates with a token of deploy/kube-flannel.yml's
// ServiceAccount, bound by the manifest's own ClusterRole and binding, and
// needs nothing more. Then, for every permission of that ClusterRole, a
// copy without it (bound to another ServiceAccount): flanneld either still
// works (the permission was not needed) or says exactly which verb on
// which resource it lacks.
func TestKubeRBAC(t *testing.T) {
	m := readManifest(t)
	perms := permissions(m.role.Rules)
	t.Logf("%s: ClusterRole %s grants %v", manifestPath, m.role.Name, perms)
	k := newKubeCluster(t, "krbac", 2+len(perms))
	ctx := testCtx(t, 3*time.Minute)
	kubeconfig := k.flannelKubeconfig(ctx, m)
	for _, n := range k.Nodes {
		k.createNode(ctx, n.Name, podCIDR(n.Index))
	}

	if !t.Run("manifest role suffices", func(t *testing.T) {
		k := k.with(t)
		nodes := k.Nodes[:2]
		started := time.Now()
		for _, n := range nodes {
			k.startKube(n, kubeRun{kubeconfig: kubeconfig, env: daemonSetEnv(m.account.Namespace, n)})
		}
		k.waitReady(nodes, started, time.Minute)
		for _, n := range nodes {
			k.checkAnnotations(ctx, n)
		}
		pods := k.addPods(nodes)
		if pairs := allPairsPing(t, pods); pairs != 2 {
			t.Errorf("checked %d pod pairs, want 2", pairs)
		}
		for _, n := range nodes {
			eventually(t, 10*time.Second, "node "+n.Name+" NetworkUnavailable=False", func() error {
				c, err := k.networkUnavailable(ctx, n.Name)
				if err == nil && (c == nil || c.Status != corev1.ConditionFalse) {
					err = fmt.Errorf("condition %v", c)
				}
				return err
			})
			if log, _ := os.ReadFile(n.LogFile); strings.Contains(string(log), "forbidden") {
				t.Errorf("flanneld on %s was refused something with the manifest's ClusterRole:\n%s", n.Name, grep(log, "forbidden"))
			}
		}
	}) {
		return
	}

	// Every reduced role at once, each on its own node; checked one by one.
	type variant struct {
		p      permission
		n      *testbed.Node
		needed bool
	}
	var variants []variant
	started := time.Now()
	for i, p := range perms {
		n := k.Nodes[2+i]
		run := kubeRun{env: daemonSetEnv(m.account.Namespace, n)}
		if p.resource == "pods" {
			// The pod lookup is flanneld's fallback when NODE_NAME is unset.
			run.env = podOnlyEnv(t, k, ctx, m.account.Namespace, n)
		}
		name := "flannel-no-" + strings.ReplaceAll(p.verb+"-"+p.resource, "/", "-")
		var err error
		run.kubeconfig, err = k.api.ServiceAccountKubeconfig(ctx, m.account.Namespace, name, without(m.role.Rules, p))
		if err != nil {
			t.Fatal(err)
		}
		k.startKube(n, run)
		variants = append(variants, variant{p, n, flanneldNeeds(p)})
	}
	for _, v := range variants {
		t.Run("without "+v.p.verb+" on "+v.p.resource, func(t *testing.T) {
			if !v.needed {
				k.with(t).waitReady([]*testbed.Node{v.n}, started, 30*time.Second)
				if log, _ := os.ReadFile(v.n.LogFile); strings.Contains(string(log), "forbidden") {
					t.Errorf("flanneld on %s was refused something although only %s was removed:\n%s", v.n.Name, v.p, grep(log, "forbidden"))
				}
				t.Logf("flanneld does not need %s: ready without it", v.p)
				return
			}
			re := regexp.MustCompile(`flanneld needs "([^"]*)" on "` + regexp.QuoteMeta(v.p.resource) + `"`)
			got := waitLog(t, k.cluster, v.n, re, 15*time.Second)
			if !slices.Contains(strings.Fields(got[1]), v.p.verb) {
				t.Errorf("flanneld on %s says %q, want it to name the missing verb %q", v.n.Name, got[0], v.p.verb)
			}
			t.Logf("flanneld on %s: %s", v.n.Name, got[0])
		})
	}
}

// flanneldNeeds lists what flanneld calls on the API when it runs as the
// manifest's DaemonSet does (NODE_NAME set); "get" on pods only matters
// without NODE_NAME, and these tests run that variant that way.
func flanneldNeeds(p permission) bool {
	switch p.resource {
	case "nodes":
		return p.verb == "get" || p.verb == "list" || p.verb == "watch"
	case "nodes/status":
		return p.verb == "patch"
	case "pods":
		return p.verb == "get"
	}
	return false
}

// daemonSetEnv is the downward-API environment of the manifest's
// DaemonSet pod on node n.
func daemonSetEnv(namespace string, n *testbed.Node) []string {
	return []string{"NODE_NAME=" + n.Name, "POD_NAME=kube-flannel-ds-" + n.Name, "POD_NAMESPACE=" + namespace}
}

// podOnlyEnv leaves NODE_NAME out, so flanneld must read its pod (created
// here, scheduled to n) to learn its node.
func podOnlyEnv(t *testing.T, k *kubeCluster, ctx context.Context, namespace string, n *testbed.Node) []string {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel-ds-" + n.Name, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:   n.Name,
			Containers: []corev1.Container{{Name: "kube-flannel", Image: "flanneld"}},
		},
	}
	if _, err := k.cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", namespace, pod.Name, err)
	}
	return []string{"POD_NAME=" + pod.Name, "POD_NAMESPACE=" + namespace}
}

func grep(log []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// flanneld facing an incomplete cluster or configuration says what is
// wrong and keeps waiting instead of exiting, and carries on by itself
// once the problem is fixed: a Node without a pod CIDR, a Node not yet
// registered, a malformed and a missing net-conf.json.
func TestKubeStartupProblems(t *testing.T) {
	k := newKubeCluster(t, "kwait", 4)
	ctx := testCtx(t, 3*time.Minute)
	noCIDR, unregistered, malformed, missing := k.Nodes[0], k.Nodes[1], k.Nodes[2], k.Nodes[3]
	k.createNode(ctx, noCIDR.Name, netip.Prefix{})
	k.createNode(ctx, malformed.Name, podCIDR(malformed.Index))
	k.createNode(ctx, missing.Name, podCIDR(missing.Index))
	adm := k.api.AdminKubeconfig
	k.startKube(noCIDR, kubeRun{kubeconfig: adm, args: []string{"--set-node-network-unavailable=false"}})
	k.startKube(unregistered, kubeRun{kubeconfig: adm})
	k.startKube(malformed, kubeRun{kubeconfig: adm,
		netConf: netConf(t, malformed, `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}`)})
	missingPath := filepath.Join(missing.Dir, "no-such-dir", "net-conf.json")
	k.startKube(missing, kubeRun{kubeconfig: adm, netConf: missingPath})

	t.Run("pod cidr not assigned", func(t *testing.T) {
		k := k.with(t)
		line := waitLog(t, k.cluster, noCIDR, regexp.MustCompile(`.*node "`+noCIDR.Name+`" pod cidr not assigned.*`), 10*time.Second)[0]
		t.Logf("flanneld on %s: %s", noCIDR.Name, line)
		// waitReady below also fails should flanneld exit before the
		// subnet.env that only the assignment can bring.
		if !k.Flanneld(noCIDR).Running() {
			t.Fatalf("flanneld on %s exited while waiting for a pod CIDR", noCIDR.Name)
		}
		assigned := time.Now()
		k.assignPodCIDR(ctx, noCIDR.Name, podCIDR(noCIDR.Index))
		env := k.waitReady([]*testbed.Node{noCIDR}, assigned, 10*time.Second)[noCIDR]
		t.Logf("subnet.env %s written %s after the pod CIDR was assigned", env.Subnet, time.Since(assigned).Round(time.Millisecond))
		if cidr := podCIDR(noCIDR.Index); !cidr.Contains(env.Subnet.Addr()) {
			t.Errorf("FLANNEL_SUBNET=%s is not in the assigned pod CIDR %s", env.Subnet, cidr)
		}
	})

	t.Run("no NetworkUnavailable without the flag", func(t *testing.T) {
		// Ready is logged before the condition would be written.
		waitLog(t, k.cluster, noCIDR, regexp.MustCompile(`ready: \d+ peers programmed`), 10*time.Second)
		// The point where the condition would have been written: after
		// this line flanneld writes none.
		waitLog(t, k.cluster, noCIDR, regexp.MustCompile(`not setting condition NetworkUnavailable`), 10*time.Second)
		c, err := k.networkUnavailable(ctx, noCIDR.Name)
		if err != nil || c != nil {
			t.Errorf("with --set-node-network-unavailable=false node %s has NetworkUnavailable %+v (%v), want none", noCIDR.Name, c, err)
		}
	})

	t.Run("node not registered yet", func(t *testing.T) {
		k := k.with(t)
		waitLog(t, k.cluster, unregistered, regexp.MustCompile(`node "`+unregistered.Name+`" not found`), 10*time.Second)
		registered := time.Now()
		k.createNode(ctx, unregistered.Name, podCIDR(unregistered.Index))
		k.waitReady([]*testbed.Node{unregistered}, registered, 10*time.Second)
		t.Logf("subnet.env written %s after the Node was created", time.Since(registered).Round(time.Millisecond))
	})

	t.Run("malformed net-conf.json", func(t *testing.T) {
		line := waitLog(t, k.cluster, malformed, regexp.MustCompile(`.*error parsing subnet config.*`), 5*time.Second)[0]
		t.Logf("flanneld on %s: %s", malformed.Name, line)
		// A retry logged after the first failure: it is waiting, not gone.
		waitLog(t, k.cluster, malformed, regexp.MustCompile(`still failing: .*error parsing subnet config`), 10*time.Second)
		if !k.Flanneld(malformed).Running() {
			t.Errorf("flanneld on %s exited after a malformed net-conf.json", malformed.Name)
		}
	})

	t.Run("missing net-conf.json", func(t *testing.T) {
		k := k.with(t)
		line := waitLog(t, k.cluster, missing, regexp.MustCompile(`.*failed to read net conf: `+regexp.QuoteMeta(missingPath)+`.*`), 5*time.Second)[0]
		t.Logf("flanneld on %s: %s", missing.Name, line)
		if !k.Flanneld(missing).Running() {
			t.Fatalf("flanneld on %s exited after failing to read net-conf.json", missing.Name)
		}
		// The operator mounts the ConfigMap: flanneld picks it up on its
		// next attempt (back-off up to 10 s) without a restart.
		if err := os.MkdirAll(filepath.Dir(missingPath), 0o755); err != nil {
			t.Fatal(err)
		}
		fixed := time.Now()
		if err := os.WriteFile(missingPath, []byte(defaultConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		k.waitReady([]*testbed.Node{missing}, fixed, 20*time.Second)
		t.Logf("subnet.env written %s after net-conf.json appeared", time.Since(fixed).Round(time.Millisecond))
	})
}
