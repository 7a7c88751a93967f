package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// Against a real kube-apiserver, as upstream: --kube-annotation-prefix
// with a slash (example.com/flannel) names the annotations
// example.com/flannel-backend-data and so on, and a node's
// example.com/flannel-node-public-ip annotation replaces the address it
// advertises, so its peers send VXLAN traffic there and pods still talk.
func TestKubeAnnotationPrefixAndNodePublicIP(t *testing.T) {
	k := newKubeCluster(t, "kpfx", 2)
	ctx := testCtx(t, 3*time.Minute)
	const prefix = "example.com/flannel"
	a, b := k.Nodes[0], k.Nodes[1]
	// A second address on a's underlay interface: the address an operator
	// would publish for the node.
	public := netip.MustParseAddr("198.51.100.231")
	if _, err := testbed.Exec(ctx, a.NS, "ip", "addr", "add", public.String()+"/24", "dev", a.Iface); err != nil {
		t.Fatal(err)
	}
	for _, n := range k.Nodes {
		k.createNode(ctx, n.Name, podCIDR(n.Index))
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, prefix+"-node-public-ip", public)
	if _, err := k.cs.CoreV1().Nodes().Patch(ctx, a.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotate node %s: %v", a.Name, err)
	}
	k.startReady(k.Nodes, kubeRun{kubeconfig: k.api.AdminKubeconfig, args: []string{"--kube-annotation-prefix=" + prefix}})

	for _, n := range k.Nodes {
		want := n.Addr
		if n == a {
			want = public
		}
		ann := k.node(ctx, n.Name).Annotations
		for key, v := range map[string]string{
			prefix + "-public-ip":           want.String(),
			prefix + "-backend-type":        "vxlan",
			prefix + "-kube-subnet-manager": "true",
		} {
			if ann[key] != v {
				t.Errorf("node %s annotation %s = %q, want %q", n.Name, key, ann[key], v)
			}
		}
		if ann[prefix+"-backend-data"] == "" {
			t.Errorf("node %s has no %s-backend-data annotation: %v", n.Name, prefix, ann)
		}
		if v, ok := ann[annPrefix+"backend-data"]; ok {
			t.Errorf("node %s has %sbackend-data=%q under the default prefix", n.Name, annPrefix, v)
		}
	}
	took := eventually(t, 5*time.Second, "node "+b.Name+" programs "+a.Name+" at "+public.String(), func() error {
		st, err := vxlanState(b.NS, "flannel.1", podCIDR(a.Index), public)
		if err == nil && !st.all() {
			err = fmt.Errorf("%s", st)
		}
		return err
	})
	t.Logf("node %s: route, neighbour and FDB entry to %s for %s after %s", b.Name, public, a.Name, took.Round(time.Millisecond))
	pods := k.addPods(k.Nodes)
	if pairs := allPairsPing(t, pods); pairs != 2 {
		t.Errorf("checked %d pod pairs, want 2", pairs)
	}
}
