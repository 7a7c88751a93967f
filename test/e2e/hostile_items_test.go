package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/lease"
)

// A lease for the underlay itself, and one overlapping an address node 1
// has on another device: refused by name, the connected underlay route and
// the foreign route stay, etcd and every pod path keep working, also after
// the keys are deleted.
func (h *hostile) underlay(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n1 := h.Nodes[0]
	ul := testbed.SegmentPrefix(1, false)
	foreign := h.spare()
	for _, cmd := range [][]string{
		{"ip", "link", "add", "hdummy", "type", "bridge"}, {"ip", "addr", "add", netip.PrefixFrom(foreign.Addr().Next(), 24).String(), "dev", "hdummy"}, {"ip", "link", "set", "hdummy", "up"},
	} {
		if out, err := testbed.Exec(ctx, n1.NS, cmd...); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	defer testbed.Exec(context.Background(), n1.NS, "ip", "link", "del", "hdummy")
	h.put(t, subnetKey(ul), vxlanValue("198.51.100.99", "02:00:00:00:02:30"))
	h.put(t, subnetKey(foreign), vxlanValue("198.51.100.98", "02:00:00:00:02:31"))
	waitLogs(t, h.Nodes, 10*time.Second, "refusing lease "+lease.MakeKey(ul, netip.Prefix{})+" (outside-network)", "10.244.0.0/16")
	waitLogs(t, []*testbed.Node{n1}, 10*time.Second, "refusing lease "+keyName(foreign)+" (overlaps-host)", "hdummy")
	atLeast(t, n1, `flannel_leases_rejected_total{reason="overlaps-host"}`, 1)
	check := func(when string) {
		for _, n := range h.Nodes {
			atLeast(t, n, `flannel_leases_rejected_total{reason="outside-network"}`, 1)
			want := ul.String() + " dev " + n.Iface
			if r, err := routesTo(n.NS, ul); err != nil || len(r) != 1 || r[0] != want {
				t.Errorf("%s %s: routes for the underlay %v (%v), want exactly %q", when, n.Name, r, err, want)
			}
		}
		want := foreign.String() + " dev hdummy"
		if r, err := routesTo(n1.NS, foreign); err != nil || len(r) != 1 || r[0] != want {
			t.Errorf("%s %s: routes %v (%v), want exactly %q", when, n1.Name, r, err, want)
		}
		if _, err := h.cli.Get(testCtx(t, 5*time.Second), "health"); err != nil {
			t.Errorf("%s: etcd unreachable: %v", when, err)
		}
		h.matrix(t)
	}
	check("with the leases")
	h.del(t, subnetKey(ul), subnetKey(foreign))
	requireUnprogrammed(t, h.Nodes[1:], foreign, netip.MustParseAddr("198.51.100.98"))
	check("after deleting them")
}

// Node 2's lease overwritten with another PublicIP and VtepMAC: node 2
// writes it back at once, logs both values, counts it; the other nodes'
// kernels hold node 2's real entries again within 1 s.
func (h *hostile) overwrite(t *testing.T) {
	victim := h.Nodes[1]
	others := []*testbed.Node{h.Nodes[0], h.Nodes[2]}
	key := subnetKey(h.subs[victim])
	mac, err := vtepMAC(victim.NS)
	if err != nil {
		t.Fatal(err)
	}
	var stream pingStream
	const interval, count = 100 * time.Millisecond, 40
	stream.start(t, h.pods[0].NS, h.pods[1].IP.String(), interval, count)
	time.Sleep(time.Second) // let the stream establish before the overwrite
	put := time.Now()
	h.put(t, key, vxlanValue("198.51.100.97", "02:00:00:00:00:97"))
	back, err := pollUntil(5*time.Second, func() error {
		resp, err := h.cli.Get(testCtx(t, 5*time.Second), key)
		if err != nil || len(resp.Kvs) != 1 {
			return fmt.Errorf("get %s: %v", key, err)
		}
		if v := string(resp.Kvs[0].Value); !strings.Contains(v, `"`+victim.Addr.String()+`"`) || !strings.Contains(v, mac) {
			return fmt.Errorf("%s holds %s", key, v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("own lease not written back: %v", err)
	}
	_, err = pollUntil(5*time.Second, func() error {
		for _, n := range others {
			st, err := vxlanState(n.NS, "flannel.1", h.subs[victim], victim.Addr)
			dsts, ferr := fdbDsts(n.NS)
			if err != nil || ferr != nil || !st.all() || dsts[netip.MustParseAddr("198.51.100.97")] {
				return fmt.Errorf("%s: %s, FDB dsts %v (%v %v)", n.Name, st, dsts, err, ferr)
			}
		}
		return nil
	})
	kernel := time.Since(put)
	if err != nil {
		t.Fatalf("peers not re-programmed: %v", err)
	}
	sent, lost := stream.wait(t)
	t.Logf("overwrite: value written back %s after the put, both peers' route/neighbour/FDB right again %s after it; ping stream %d sent, %d lost at %s intervals",
		back.Round(time.Millisecond), kernel.Round(time.Millisecond), sent, lost, interval)
	if kernel > time.Second {
		t.Errorf("peers' kernels right again only %s after the overwrite, want within 1 s", kernel)
	}
	if time.Duration(lost)*interval > time.Second {
		t.Errorf("pods lost %d pings (%s), want at most 1 s worth", lost, time.Duration(lost)*interval)
	}
	waitLogs(t, []*testbed.Node{victim}, 5*time.Second, "was overwritten by another writer", victim.Addr.String()+" -> 198.51.100.97", mac+" -> 02:00:00:00:00:97")
	atLeast(t, victim, "flannel_own_lease_reasserted_total", 1)
	for _, n := range others { // their own writes never count as overwrites
		if v, err := metric(testCtx(t, 10*time.Second), n, "flannel_own_lease_reasserted_total"); err != nil || v != 0 {
			t.Errorf("%s: flannel_own_lease_reasserted_total = %v (%v), want 0", n.Name, v, err)
		}
	}
	// Junk over the lease: no node can read it; the owner writes its own back.
	h.put(t, key, "garbage")
	junk, err := pollUntil(5*time.Second, func() error {
		resp, err := h.cli.Get(testCtx(t, 5*time.Second), key)
		if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"`+victim.Addr.String()+`"`) {
			return fmt.Errorf("%s: %v %v", key, resp, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("own lease not written back over junk: %v", err)
	}
	t.Logf("overwrite with junk: value written back %s after the put", junk.Round(time.Millisecond))
	h.peersProgrammed(t)
	h.matrix(t)
}

// An inconsistent subnet.env (FLANNEL_SUBNET outside FLANNEL_NETWORK) is a
// CNI error naming both values; no pod is made.
func (h *hostile) cni(t *testing.T) {
	n := h.Nodes[0]
	orig, err := os.ReadFile(n.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := os.WriteFile(n.SubnetFile, orig, 0o644); err != nil {
			t.Error(err)
		}
	}()
	bad := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.245.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	if err := os.WriteFile(n.SubnetFile, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := h.AddPod(testCtx(t, time.Minute), n)
	if err == nil {
		t.Fatalf("pod %s made at %s from a subnet.env whose subnet is outside its network", p.Name, p.IP)
	}
	for _, want := range []string{"FLANNEL_SUBNET=10.245.1.1/24", "FLANNEL_NETWORK=10.244.0.0/16"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CNI error %q does not name %s", err, want)
		}
	}
	t.Logf("CNI error: %v", err)
}

// etcd restarted with an empty data dir and the config put back: the
// running nodes re-create their leases with the same subnets and pods keep
// talking; a node that was down meanwhile takes back subnet.env's subnet.
func (h *hostile) datastoreLoss(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	down := h.Nodes[2]
	running := h.Nodes[:2]
	if err := h.StopFlanneld(down); err != nil {
		t.Fatal(err)
	}
	var stream pingStream
	const interval, count = 200 * time.Millisecond, 50
	stream.start(t, h.pods[0].NS, h.pods[1].IP.String(), interval, count)
	if err := h.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h.Opts.StateDir, "etcd", "data")); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	if err := h.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.PutConfig(ctx, "", defaultConfig); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "running nodes' leases back", func() error {
		for _, n := range running {
			resp, err := h.cli.Get(testCtx(t, 5*time.Second), subnetKey(h.subs[n]))
			if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"`+n.Addr.String()+`"`) {
				return fmt.Errorf("%s's lease %s: %v", n.Name, subnetKey(h.subs[n]), err)
			}
		}
		return nil
	})
	t.Logf("datastore loss: both running nodes' leases back %s after the empty etcd was started", time.Since(up).Round(time.Millisecond))
	// During: the down node's lease is not back, yet the running nodes keep
	// its routes (held after the reset), so its pods stay reachable.
	requireProgrammed(t, running, h.subs[down], down.Addr)
	again := h.start([]*testbed.Node{down}, metricsArgs...)[down].Subnet.Masked()
	if again != h.subs[down] {
		t.Errorf("%s came back with %s, want subnet.env's %s", down.Name, again, h.subs[down])
	}
	waitLogs(t, []*testbed.Node{down}, 5*time.Second, "took back lease "+lease.MakeKey(again, netip.Prefix{}))
	sent, lost := stream.wait(t)
	t.Logf("datastore loss: pod ping stream %d sent, %d lost at %s intervals", sent, lost, interval)
	if lost != 0 {
		t.Errorf("pods lost %d of %d pings across the datastore loss", lost, sent)
	}
	eventually(t, 10*time.Second, "all peers programmed", func() error {
		for _, n := range h.Nodes {
			for _, m := range h.Nodes {
				if st, err := vxlanState(n.NS, "flannel.1", h.subs[m], m.Addr); m != n && (err != nil || !st.all()) {
					return fmt.Errorf("%s for %s: %s %v", n.Name, m.Name, st, err)
				}
			}
		}
		return nil
	})
	h.matrix(t)
}

// Network changed under the running nodes: they report it (log, gauge,
// /readyz) and keep their pods talking; a restarted node removes its old
// lease and never programs it as a peer.
func (h *hostile) configChange(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	const newConf = `{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}`
	if err := h.PutConfig(ctx, "", newConf); err != nil {
		t.Fatal(err)
	}
	waitLogs(t, h.Nodes, 15*time.Second, "network config in etcd changed under the running daemon", "10.245.0.0/16")
	for _, n := range h.Nodes {
		atLeast(t, n, "flannel_network_config_mismatch", 1)
		body, err := readyz(ctx, n)
		if err == nil || !strings.Contains(body, "10.245.0.0/16") {
			t.Errorf("%s /readyz: %q %v, want 503 naming the new network", n.Name, body, err)
		}
	}
	h.matrix(t)
	n3 := h.Nodes[2]
	old := h.subs[n3]
	if err := h.StopFlanneld(n3); err != nil {
		t.Fatal(err)
	}
	fresh := h.start([]*testbed.Node{n3}, metricsArgs...)[n3].Subnet.Masked()
	if !netip.MustParsePrefix("10.245.0.0/16").Contains(fresh.Addr()) {
		t.Fatalf("%s restarted with %s, want a subnet of 10.245.0.0/16", n3.Name, fresh)
	}
	if resp, err := h.cli.Get(ctx, subnetKey(old), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Errorf("old lease %s of %s still in etcd (%v)", subnetKey(old), n3.Name, err)
	}
	waitLogs(t, []*testbed.Node{n3}, 5*time.Second, "removed this node's lease "+lease.MakeKey(old, netip.Prefix{}))
	waitLogs(t, h.Nodes[:2], 10*time.Second, "refusing lease "+lease.MakeKey(fresh, netip.Prefix{})+" (outside-network)")
	for _, n := range h.Nodes {
		for _, s := range []netip.Prefix{old, fresh} {
			if r, _ := routesTo(n.NS, s); len(r) != 0 && !(n == n3 && s == old && len(r) == 1 && strings.HasSuffix(r[0], "dev cni0")) {
				t.Errorf("%s routes %s: %v (want nothing, or only cni0 on %s for its old pods)", n.Name, s, r, n3.Name)
			}
		}
	}
	h.pods = h.pods[:2]
	h.matrixPair(t)
}

// matrixPair pings between the first two pods both ways.
func (h *hostile) matrixPair(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	for _, pair := range [][2]*testbed.Pod{{h.pods[0], h.pods[1]}, {h.pods[1], h.pods[0]}} {
		if err := ping(ctx, pair[0].NS, pair[1].IP, 56, false); err != nil {
			t.Errorf("%s -> %s: %v", pair[0].Name, pair[1].Name, err)
		}
	}
}
