//go:build upstream

package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// Interop with upstream flanneld, whose binary this repository does not
// carry: built only with -tags upstream (scripts/interop.sh), with
// $FLANNEL_UPSTREAM_FLANNELD naming the binary.
//
// Node n1 runs our flanneld, n2 upstream's, in etcd mode; for each backend
// the pods on the two nodes ping each other both ways, FLANNEL_MTU agrees,
// and the DF boundary is exact in both directions (FLANNEL_MTU-28 bytes
// of ICMP payload pass, one more does not). WireGuard is not here:
// upstream drives only the kernel module, which this machine lacks.
func TestUpstreamInterop(t *testing.T) {
	bin := os.Getenv("FLANNEL_UPSTREAM_FLANNELD")
	if bin == "" {
		t.Fatal("FLANNEL_UPSTREAM_FLANNELD is unset: set it to an upstream flanneld binary (scripts/interop.sh runs this test)")
	}
	if st, err := os.Stat(bin); err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("FLANNEL_UPSTREAM_FLANNELD=%s is not an executable file (%v)", bin, err)
	}
	for _, c := range []struct {
		backend, name string
		mtu           int
	}{
		{"udp", "upudp", 1472},
		{"vxlan", "upvx", 1450},
		{"host-gw", "uphg", 1500},
	} {
		t.Run(c.backend, func(t *testing.T) {
			t.Parallel()
			conf := `{"Network":"10.244.0.0/16","Backend":{"Type":"` + c.backend + `"}}`
			cl := newCluster(t, c.name, clusterOpts{nodes: 2, config: conf})
			ours, theirs := cl.Nodes[0], cl.Nodes[1]
			theirs.FlanneldPath = bin
			envs := cl.start(cl.Nodes)
			requireUpstreamRan(t, theirs)
			for n, env := range envs {
				if env.MTU != c.mtu {
					t.Errorf("node %s: FLANNEL_MTU=%d, want %d", n.Name, env.MTU, c.mtu)
				}
			}
			pods := cl.addPods([]*testbed.Node{ours, theirs})
			if pairs := allPairsPing(t, pods); pairs != 2 {
				t.Fatalf("%d of 2 pod pairs (ours <-> upstream) answered", pairs)
			}
			mtuBoundary(t, pods[0], pods[1], c.mtu)
			mtuBoundary(t, pods[1], pods[0], c.mtu)
		})
	}
}

// upstreamBanner is a line upstream flanneld logs at every start and ours
// never does.
const upstreamBanner = "Installing signal handlers"

// requireUpstreamRan proves the node's log is upstream flanneld's.
func requireUpstreamRan(t *testing.T, n *testbed.Node) {
	t.Helper()
	log, err := os.ReadFile(n.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), upstreamBanner) {
		t.Fatalf("node %s's log lacks upstream's %q: did it run upstream flanneld?\n%s", n.Name, upstreamBanner, log)
	}
}
