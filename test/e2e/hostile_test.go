package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// Hostile and broken datastore contents (issue 15) on one 3-node VXLAN
// cluster with a pod per node: each item checks the pod matrix and the
// kernel before, during and after. Items that leave the cluster changed
// (datastore loss, config change) come last.
func TestHostileDatastore(t *testing.T) {
	c := newCluster(t, "hos", clusterOpts{nodes: 3})
	envs := c.start(c.Nodes, metricsArgs...)
	h := &hostile{cluster: c, t: t, subs: map[*testbed.Node]netip.Prefix{}}
	for n, env := range envs {
		h.subs[n] = env.Subnet.Masked()
	}
	h.pods = c.addPods(c.Nodes)
	cli, err := c.EtcdClient(testCtx(t, 5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	h.cli = cli
	h.matrix(t)
	h.peersProgrammed(t)

	t.Run("oversized", h.oversized)
	t.Run("implausible", h.implausible)
	t.Run("underlay", h.underlay)
	t.Run("overwrite", h.overwrite)
	t.Run("cni", h.cni)
	t.Run("datastore-loss", h.datastoreLoss)
	t.Run("config-change", h.configChange)
}

// 1 MiB values: each key is logged once, in a bounded line, never
// programmed, and flanneld's memory does not grow with what it was sent.
func (h *hostile) oversized(t *testing.T) {
	junkNet, paddedNet := h.spare(), h.spare()
	junk, padded := subnetKey(junkNet), subnetKey(paddedNet)
	const rounds, size = 10, 1 << 20
	send := func() {
		for i := range rounds {
			h.put(t, junk, strings.Repeat(string(rune('a'+i)), size))
			pad := strings.Repeat("x", size-100)
			h.put(t, padded, `{"PublicIP":"198.51.100.99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:02:49","Pad":"`+pad+`"}}`)
		}
	}
	// The first round grows the heap to what one 1 MiB message needs; after
	// it, more junk must not take more memory.
	send()
	before := map[*testbed.Node]int{}
	for _, n := range h.Nodes {
		before[n], _ = rssKiB(h.Flanneld(n).Pid)
	}
	send()
	send()
	for _, key := range []string{junk, padded} {
		for n, lines := range waitLogs(t, h.Nodes, 10*time.Second, "ignoring etcd key "+key) {
			if len(lines) != 1 || len(lines[0]) > 1024 {
				t.Errorf("%s logged %s %d times (want once), longest line %d bytes (want <= 1024)", n.Name, key, len(lines), len(lines[0]))
			}
		}
	}
	for _, n := range h.Nodes {
		after, err := rssKiB(h.Flanneld(n).Pid)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: flanneld RSS %d KiB after %d MiB of junk, %d KiB after %d MiB more", n.Name, before[n], 2*rounds*size>>20, after, 4*rounds*size>>20)
		if grew := after - before[n]; grew > 8<<10 {
			t.Errorf("%s: flanneld RSS grew by %d KiB with %d MiB more junk, want under 8 MiB (a fifth of it)", n.Name, grew, 4*rounds*size>>20)
		}
		for _, s := range []netip.Prefix{junkNet, paddedNet} {
			if r, err := routesTo(n.NS, s); err != nil || len(r) != 0 {
				t.Errorf("%s has routes %v for the junk lease %s (%v)", n.Name, r, s, err)
			}
		}
	}
	h.matrix(t)
	h.del(t, junk, padded)
}

// Public addresses no node can have, and node 2's own address for another
// subnet: refused by name on the nodes concerned, never in an FDB or route.
func (h *hostile) implausible(t *testing.T) {
	n2 := h.Nodes[1]
	bad := map[netip.Prefix]string{h.spare(): "0.0.0.0", h.spare(): "127.0.0.1", h.spare(): "224.0.0.1", h.spare(): "169.254.1.1"}
	var keys []string
	for s, ip := range bad {
		keys = append(keys, subnetKey(s))
		h.put(t, keys[len(keys)-1], vxlanValue(ip, "02:00:00:00:02:40"))
	}
	twin := h.spare()
	keys = append(keys, subnetKey(twin))
	h.put(t, subnetKey(twin), vxlanValue(n2.Addr.String(), "02:00:00:00:02:44"))
	for s := range bad {
		waitLogs(t, h.Nodes, 10*time.Second, "refusing lease "+keyName(s)+" (bad-public-ip)", bad[s])
	}
	waitLogs(t, []*testbed.Node{n2}, 10*time.Second, "refusing lease "+keyName(twin)+" (own-public-ip)", n2.Addr.String())
	for _, n := range h.Nodes {
		atLeast(t, n, `flannel_leases_rejected_total{reason="bad-public-ip"}`, 4)
		dsts, err := fdbDsts(n.NS)
		if err != nil {
			t.Fatal(err)
		}
		for s, ip := range bad {
			if dsts[netip.MustParseAddr(ip)] {
				t.Errorf("%s has an FDB entry to %s", n.Name, ip)
			}
			if r, _ := routesTo(n.NS, s); len(r) != 0 {
				t.Errorf("%s routes %s: %v", n.Name, s, r)
			}
		}
	}
	atLeast(t, n2, `flannel_leases_rejected_total{reason="own-public-ip"}`, 1)
	if r, _ := routesTo(n2.NS, twin); len(r) != 0 {
		t.Errorf("%s routes its own address's twin lease: %v", n2.Name, r)
	}
	h.matrix(t)
	h.del(t, keys...)
	h.peersProgrammed(t)
}
