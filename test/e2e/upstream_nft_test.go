//go:build upstream

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// In nftables mode our node's tables list exactly as upstream's node's,
// both nodes configured alike (each node's own subnet aside), and our
// flanneld taking over upstream's node leaves upstream's tables as they
// are (same rule handles: nothing rewritten).
func TestUpstreamNFTablesTable(t *testing.T) {
	bin := os.Getenv("FLANNEL_UPSTREAM_FLANNELD")
	if bin == "" {
		t.Fatal("FLANNEL_UPSTREAM_FLANNELD is unset: set it to an upstream flanneld binary (scripts/interop.sh runs this test)")
	}
	conf := `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`
	cl := newCluster(t, "upnft", clusterOpts{nodes: 2, config: conf})
	ours, theirs := cl.Nodes[0], cl.Nodes[1]
	theirs.FlanneldPath = bin
	envs := cl.start(cl.Nodes, "--ip-masq")
	requireUpstreamRan(t, theirs)

	list := func(n *testbed.Node, args ...string) string {
		t.Helper()
		var b strings.Builder
		for _, table := range [][]string{{"ip", "flannel-ipv4"}, {"ip6", "flannel-ipv6"}} {
			out, err := testbed.Exec(testCtx(t, 10*time.Second), n.NS, append(append([]string{"nft"}, args...), append([]string{"list", "table"}, table...)...)...)
			if err != nil {
				t.Fatalf("node %s: nft list table %s: %v\n%s", n.Name, table, err, out)
			}
			b.Write(out)
		}
		own := envs[n].Subnet.Masked().String()
		return strings.ReplaceAll(b.String(), own, "<own subnet>")
	}
	// Upstream writes its forward rules a moment after its masquerade rules.
	var got, want string
	eventually(t, 10*time.Second, "both nodes' tables complete", func() error {
		got, want = list(ours), list(theirs)
		if got != want {
			return errString("differ")
		}
		return nil
	})
	if got != want {
		t.Fatalf("our node's tables:\n%s\nupstream's node's:\n%s", got, want)
	}
	t.Logf("both nodes:\n%s", got)

	before := list(theirs, "-a")
	if err := cl.StopFlanneld(theirs); err != nil {
		t.Fatal(err)
	}
	theirs.FlanneldPath = ""
	cl.start([]*testbed.Node{theirs}, "--ip-masq")
	if after := list(theirs, "-a"); after != before {
		t.Errorf("our flanneld rewrote upstream's correct tables\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
