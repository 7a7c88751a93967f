package etcd

import (
	"net/netip"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelgo/flannel/internal/lease"
)

// A node whose lease was deleted (or expired) while it was down takes back
// the subnet its subnet.env names, as upstream does; if another node holds
// it meanwhile, it gets another one.
func TestAcquireTakesBackPreviousSubnet(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	prev := netip.MustParsePrefix("10.244.77.1/24")
	for range 3 { // random picks would almost never hit 10.244.77.0 thrice
		l := acquire(t, s.manager(t, Options{PreviousSubnet: prev}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
		if l.Subnet != prev.Masked() {
			t.Fatalf("got %s, want subnet.env's %s back", l.Subnet, prev.Masked())
		}
		if _, err := s.raw().Delete(testCtx(t), subnetsPath+l.Key()); err != nil {
			t.Fatal(err)
		}
	}
	other := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.3", "ae:00:00:00:00:03"))
	l := acquire(t, s.manager(t, Options{PreviousSubnet: netip.PrefixFrom(other.Subnet.Addr().Next(), 24)}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	if l.Subnet == other.Subnet {
		t.Fatalf("took %s from the node holding it", l.Subnet)
	}
}

// After the operator changes Network, a restarting node removes its old
// lease, which no longer fits, instead of leaving it to be programmed as a
// peer (by itself too).
func TestAcquireDropsOwnLeaseOfOldNetwork(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	old := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	other := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.3", "ae:00:00:00:00:03"))
	s.put(configKey, `{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}`)
	prev := netip.PrefixFrom(old.Subnet.Addr().Next(), 24)
	l := acquire(t, s.manager(t, Options{PreviousSubnet: prev}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	if !netip.MustParsePrefix("10.245.0.0/16").Contains(l.Subnet.Addr()) {
		t.Fatalf("got %s, want a subnet of the new network", l.Subnet)
	}
	if n := getRaw(t, s.raw(), subnetsPath+old.Key(), clientv3.WithCountOnly()).Count; n != 0 {
		t.Errorf("old own lease %s still in etcd", old.Key())
	}
	// Another node's old lease is its own business (it is alive).
	if n := getRaw(t, s.raw(), subnetsPath+other.Key(), clientv3.WithCountOnly()).Count; n != 1 {
		t.Errorf("lease %s of another running node was removed", other.Key())
	}
}

// ReassertLease writes the node's value back only over the value it saw.
func TestReassertLeaseCompareAndSwap(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	m := s.manager(t, Options{})
	own := acquire(t, m, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	key := subnetsPath + own.Key()
	resp, err := s.raw().Put(testCtx(t), key, `{"PublicIP":"198.51.100.66","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:66"}}`)
	if err != nil {
		t.Fatal(err)
	}
	hostile := resp.Header.Revision
	if ok, err := m.ReassertLease(testCtx(t), own, hostile-1); ok || err != nil {
		t.Fatalf("re-assert over a revision not seen: wrote=%v err=%v", ok, err)
	}
	if ok, err := m.ReassertLease(testCtx(t), own, hostile); !ok || err != nil {
		t.Fatalf("re-assert: wrote=%v err=%v", ok, err)
	}
	kv := getRaw(t, s.raw(), key).Kvs[0]
	got, err := lease.DecodeValue(kv.Value)
	if err != nil || got.PublicIP != own.Attrs.PublicIP || string(got.BackendData) != string(own.Attrs.BackendData) {
		t.Fatalf("after re-assert %s holds %s (%v)", key, kv.Value, err)
	}
	if kv.Lease == 0 {
		t.Errorf("re-asserted key has no etcd lease: it would never expire")
	}
}

// etcd restarted with an empty data dir: the watcher notices the revision
// went back, reports the node's own lease removed at once (the daemon
// re-creates it) and keeps other nodes' leases, which their daemons
// re-create, without a Removed event.
func TestWatchDatastoreReset(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	m := s.manager(t, Options{})
	m.removalHold = 6 * time.Second
	own := acquire(t, m, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	gone := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.4", "ae:00:00:00:00:04"))
	peer := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.3", "ae:00:00:00:00:03"))
	for range 20 { // a revision the fresh store will not reach in a few seconds
		s.put(DefaultPrefix+"/churn", "x")
	}
	w := startWatch(t, m)
	if b := w.batch(10 * time.Second); len(b) != 3 {
		t.Fatalf("first batch %v, want both leases", b)
	}
	s.stop()
	if err := os.RemoveAll(s.dir); err != nil {
		t.Fatal(err)
	}
	s.start(s.clientPort)
	s.put(configKey, netConf)
	start := time.Now()
	b := w.batch(15 * time.Second)
	if len(b) != 1 || b[0].Type != lease.Removed || b[0].Lease.Key() != own.Key() {
		t.Fatalf("after the reset got %v, want only the own lease %s removed", b, own.Key())
	}
	t.Logf("own lease reported lost %s after etcd came back empty", time.Since(start).Round(time.Millisecond))
	// The peer's daemon re-creates its lease: no event, since nothing changed.
	value, _ := peer.Attrs.MarshalJSON()
	s.put(subnetsPath+peer.Key(), string(value))
	w.quiet(2 * time.Second)
	// The node that did not come back is reported removed once the hold
	// is over.
	b = w.batch(15 * time.Second)
	if len(b) != 1 || b[0].Type != lease.Removed || b[0].Lease.Key() != gone.Key() {
		t.Fatalf("after the hold got %v, want %s removed", b, gone.Key())
	}
	if held := time.Since(start); held < m.removalHold-time.Second {
		t.Errorf("%s removed after %s, before the %s hold", gone.Key(), held, m.removalHold)
	}
}

// Junk over this node's lease: no node can hold a subnet with a value
// nobody reads, so the renewal writes ours back over exactly that junk.
func TestRenewWritesOverJunk(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	m := s.manager(t, Options{})
	own := acquire(t, m, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	key := subnetsPath + own.Key()
	s.put(key, "garbage")
	if err := m.RenewLease(testCtx(t), own); err != nil {
		t.Fatalf("renew over junk: %v", err)
	}
	got, err := lease.DecodeValue(getRaw(t, s.raw(), key).Kvs[0].Value)
	if err != nil || got.PublicIP != own.Attrs.PublicIP {
		t.Fatalf("after renewal %s holds %+v (%v)", key, got, err)
	}
}
