package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnet"
)

const (
	netConf     = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	configKey   = DefaultPrefix + "/config"
	subnetsPath = DefaultPrefix + "/subnets/"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func vxlanAttrs(publicIP, mac string) *lease.Attrs {
	return &lease.Attrs{
		PublicIP:    netip.MustParseAddr(publicIP),
		BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`),
	}
}

func acquire(t *testing.T, m *Manager, attrs *lease.Attrs) *lease.Lease {
	t.Helper()
	l, err := m.AcquireLease(testCtx(t), attrs)
	if err != nil {
		t.Fatalf("AcquireLease(%s): %v", attrs.PublicIP, err)
	}
	return l
}

// getRaw reads a key as upstream flanneld would see it.
func getRaw(t *testing.T, cli *clientv3.Client, key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	resp, err := cli.Get(testCtx(t), key, opts...)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return resp
}

func TestGetNetworkConfig(t *testing.T) {
	s := startEtcd(t)
	ctx := testCtx(t)

	t.Run("missing", func(t *testing.T) {
		_, err := s.manager(t, Options{}).GetNetworkConfig(ctx)
		if !errors.Is(err, ErrConfigNotFound) {
			t.Fatalf("err = %v, want ErrConfigNotFound", err)
		}
		for _, want := range []string{configKey, "etcdctl put " + configKey, s.endpoint()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
	t.Run("present", func(t *testing.T) {
		s.put(configKey, netConf)
		cfg, err := s.manager(t, Options{}).GetNetworkConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Network != netip.MustParsePrefix("10.244.0.0/16") || cfg.SubnetLen != 24 || cfg.BackendType != "vxlan" {
			t.Errorf("config = %+v", cfg)
		}
	})
	t.Run("custom prefix", func(t *testing.T) {
		s.put("/example.com/net/config", `{"Network":"10.245.0.0/16"}`)
		cfg, err := s.manager(t, Options{Prefix: "/example.com/net/"}).GetNetworkConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Network != netip.MustParsePrefix("10.245.0.0/16") {
			t.Errorf("Network = %s, want 10.245.0.0/16", cfg.Network)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		s.put("/bad/config", `{"Network":`)
		_, err := s.manager(t, Options{Prefix: "/bad"}).GetNetworkConfig(ctx)
		if err == nil || !strings.Contains(err.Error(), "/bad/config") || !strings.Contains(err.Error(), "error parsing subnet config") {
			t.Fatalf("err = %v, want a parse error naming /bad/config", err)
		}
	})
	t.Run("etcd down", func(t *testing.T) {
		m, err := New(Options{Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}})
		if err != nil {
			t.Fatalf("New must not need etcd: %v", err)
		}
		defer m.Close()
		start := time.Now()
		_, err = m.GetNetworkConfig(ctx)
		if err == nil || !strings.Contains(err.Error(), "is etcd running") {
			t.Fatalf("err = %v, want advice about reaching etcd", err)
		}
		if d := time.Since(start); d > requestTimeout+2*time.Second {
			t.Errorf("took %s with etcd down", d)
		}
	})
}

func TestAcquireWritesUpstreamKeyAndValue(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	m := s.manager(t, Options{LeaseTTL: time.Hour})
	attrs := vxlanAttrs("198.51.100.2", "ae:11:22:33:44:55")
	before := time.Now()
	l := acquire(t, m, attrs)

	if !netip.MustParsePrefix("10.244.0.0/16").Contains(l.Subnet.Addr()) || l.Subnet.Bits() != 24 || l.Subnet.Addr() == netip.MustParseAddr("10.244.0.0") {
		t.Errorf("subnet %s is not a /24 in 10.244.0.0/16 above SubnetMin", l.Subnet)
	}
	resp := getRaw(t, s.raw(), subnetsPath, clientv3.WithPrefix())
	if len(resp.Kvs) != 1 {
		t.Fatalf("%d keys under %s, want 1", len(resp.Kvs), subnetsPath)
	}
	kv := resp.Kvs[0]
	if want := subnetsPath + l.Key(); string(kv.Key) != want || !regexp.MustCompile(`^/coreos.com/network/subnets/10\.244\.\d+\.0-24$`).Match(kv.Key) {
		t.Errorf("key = %s, want %s in upstream form", kv.Key, want)
	}
	if want := `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:11:22:33:44:55"}}`; string(kv.Value) != want {
		t.Errorf("value = %s\nwant    %s", kv.Value, want)
	}
	if kv.Lease == 0 {
		t.Fatal("key is not attached to an etcd lease")
	}
	ttl, err := s.raw().TimeToLive(testCtx(t), clientv3.LeaseID(kv.Lease))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 3600 || ttl.TTL < 3590 {
		t.Errorf("etcd lease granted TTL %d, remaining %d; want 3600", ttl.GrantedTTL, ttl.TTL)
	}
	if exp := before.Add(time.Hour); l.Expiration.Before(exp.Add(-2*time.Second)) || l.Expiration.After(exp.Add(5*time.Second)) {
		t.Errorf("Expiration = %s, want about %s", l.Expiration, exp)
	}
	if l.Attrs.PublicIP != attrs.PublicIP || string(l.Attrs.BackendData) != string(attrs.BackendData) {
		t.Errorf("lease attrs = %+v", l.Attrs)
	}
}

func TestAcquireReusesLeaseOnRestart(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	ctx, stop := context.WithCancel(testCtx(t))
	m1 := s.manager(t, Options{})
	first, err := m1.AcquireLease(ctx, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	if err != nil {
		t.Fatal(err)
	}
	// The process ends (its liveness marker goes), and without a
	// subnet.env (a reboot clears /run) the node still finds its lease.
	stop()
	m1.Close()

	// The node restarts with a new VTEP MAC: it keeps its subnet and
	// publishes the new MAC.
	m := s.manager(t, Options{})
	second := acquire(t, m, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:02"))
	if second.Subnet != first.Subnet {
		t.Fatalf("restarted node got %s, want its old subnet %s", second.Subnet, first.Subnet)
	}
	resp := getRaw(t, s.raw(), subnetsPath, clientv3.WithPrefix())
	if len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), "ae:00:00:00:00:02") {
		t.Fatalf("etcd holds %v, want one lease with the new MAC", resp.Kvs)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Fatal("re-used key lost its etcd lease")
	}

	third := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.3", "ae:00:00:00:00:03"))
	if third.Subnet == first.Subnet {
		t.Fatalf("a node with another PublicIP got the same subnet %s", third.Subnet)
	}
}

// Two running nodes with one public address (Vagrant's NAT NIC): the second
// gets its own subnet instead of silently taking over the first one's; a
// restarted node whose subnet.env names its lease keeps it even while its
// old marker has not expired yet.
func TestAcquireDuplicateAddress(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	first := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	second := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:02"))
	if second.Subnet == first.Subnet {
		t.Fatalf("a second running node with address 198.51.100.2 took the first one's subnet %s", first.Subnet)
	}
	again := acquire(t, s.manager(t, Options{PreviousSubnet: netip.PrefixFrom(first.Subnet.Addr().Next(), 24)}),
		vxlanAttrs("198.51.100.2", "ae:00:00:00:00:03"))
	if again.Subnet != first.Subnet {
		t.Fatalf("restart with subnet.env naming %s got %s", first.Subnet, again.Subnet)
	}
}

// An upstream flanneld writes PublicIPv6 as null; our node must recognise
// the lease as its own after switching implementations.
func TestAcquireReusesUpstreamLease(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	cli := s.raw()
	ctx := testCtx(t)
	granted, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	key := subnetsPath + "10.244.77.0-24"
	if _, err := cli.Put(ctx, key, `{"PublicIP":"198.51.100.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:77:77:77:77:77"}}`, clientv3.WithLease(granted.ID)); err != nil {
		t.Fatal(err)
	}
	l := acquire(t, s.manager(t, Options{}), vxlanAttrs("198.51.100.7", "ae:77:77:77:77:78"))
	if l.Subnet != netip.MustParsePrefix("10.244.77.0/24") {
		t.Fatalf("got %s, want the upstream lease 10.244.77.0/24", l.Subnet)
	}
}

func TestAcquireConcurrent(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	const nodes = 20
	leases := make([]*lease.Lease, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range nodes {
		m := s.manager(t, Options{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = m.AcquireLease(testCtx(t), vxlanAttrs(fmt.Sprintf("198.51.100.%d", 10+i), "ae:00:00:00:00:01"))
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if j, dup := seen[l.Subnet]; dup {
			t.Errorf("nodes %d and %d both hold %s", j, i, l.Subnet)
		}
		seen[l.Subnet] = i
	}
	resp := getRaw(t, s.raw(), subnetsPath, clientv3.WithPrefix())
	if len(resp.Kvs) != nodes {
		t.Errorf("%d keys in etcd, want %d", len(resp.Kvs), nodes)
	}
	t.Logf("%d nodes acquired %d distinct subnets in %s", nodes, len(seen), time.Since(start).Round(time.Millisecond))
}

func TestAcquireNoFreeSubnet(t *testing.T) {
	s := startEtcd(t)
	const conf = `{"Network":"10.244.0.0/28","SubnetLen":30,"Backend":{"Type":"vxlan"}}`
	s.put(configKey, conf)
	cfg, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.SubnetCount()
	for i := range n {
		acquire(t, s.manager(t, Options{}), vxlanAttrs(fmt.Sprintf("198.51.100.%d", 10+i), "ae:00:00:00:00:01"))
	}
	start := time.Now()
	_, err = s.manager(t, Options{}).AcquireLease(testCtx(t), vxlanAttrs("198.51.100.99", "ae:00:00:00:00:01"))
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s to notice the network is full", d)
	}
	if !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("err = %v, want ErrNoFreeSubnet", err)
	}
	want := fmt.Sprintf("no free subnet in network 10.244.0.0/28 (SubnetLen /30, %d subnets between SubnetMin", n)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "remove stale leases") {
		t.Errorf("error %q\ndoes not contain %q", err, want)
	}
	t.Logf("error: %v", err)
}

func TestAcquireDualStack(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	attrs := vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01")
	attrs.PublicIPv6 = netip.MustParseAddr("fd00:198:51:100::2")
	attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"ae:00:00:00:00:02"}`)
	l := acquire(t, s.manager(t, Options{}), attrs)
	if !l.Subnet.IsValid() || !l.IPv6Subnet.IsValid() || l.IPv6Subnet.Bits() != 64 {
		t.Fatalf("lease %+v lacks a family", l)
	}
	resp := getRaw(t, s.raw(), subnetsPath, clientv3.WithPrefix())
	if len(resp.Kvs) != 1 {
		t.Fatalf("%d keys, want 1", len(resp.Kvs))
	}
	key := string(resp.Kvs[0].Key)
	if !regexp.MustCompile(`^/coreos.com/network/subnets/10\.244\.\d+\.0-24&fd00:10:244:[0-9a-f]+::-64$`).MatchString(key) {
		t.Errorf("key %s is not in upstream's dual-stack form", key)
	}
	var got lease.Attrs
	if err := json.Unmarshal(resp.Kvs[0].Value, &got); err != nil || got.PublicIPv6 != attrs.PublicIPv6 {
		t.Errorf("value %s: PublicIPv6 = %v (%v)", resp.Kvs[0].Value, got.PublicIPv6, err)
	}
	again := acquire(t, s.manager(t, Options{PreviousSubnet: l.Subnet, PreviousIPv6Subnet: l.IPv6Subnet}), attrs)
	if again.Key() != l.Key() {
		t.Errorf("restart got %s, want %s", again.Key(), l.Key())
	}
}

// In dual stack a subnet is taken when any key holds it, even combined with
// another subnet of the other family.
func TestAcquireDualStackChecksEachFamily(t *testing.T) {
	s := startEtcd(t)
	const conf = `{"Network":"10.244.0.0/28","SubnetLen":30,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/124","IPv6SubnetLen":126,"Backend":{"Type":"vxlan"}}`
	s.put(configKey, conf)
	cfg, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SubnetCount() != 3 || cfg.IPv6SubnetCount() != 3 {
		t.Fatalf("test assumes 3 subnets per family, config has %d and %d", cfg.SubnetCount(), cfg.IPv6SubnetCount())
	}
	// Two upstream nodes hold crossed pairs: only the third of each family
	// is free.
	s.put(subnetsPath+lease.MakeKey(cfg.NthSubnet(0), cfg.NthIPv6Subnet(1)), `{"PublicIP":"198.51.100.50","PublicIPv6":"fd00:198:51:100::50"}`)
	s.put(subnetsPath+lease.MakeKey(cfg.NthSubnet(1), cfg.NthIPv6Subnet(0)), `{"PublicIP":"198.51.100.51","PublicIPv6":"fd00:198:51:100::51"}`)
	attrs := vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01")
	attrs.PublicIPv6 = netip.MustParseAddr("fd00:198:51:100::2")
	l := acquire(t, s.manager(t, Options{}), attrs)
	if l.Subnet != cfg.NthSubnet(2) || l.IPv6Subnet != cfg.NthIPv6Subnet(2) {
		t.Fatalf("got %s, want %s", l.Key(), lease.MakeKey(cfg.NthSubnet(2), cfg.NthIPv6Subnet(2)))
	}
	attrs.PublicIP, attrs.PublicIPv6 = netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("fd00:198:51:100::3")
	if _, err := s.manager(t, Options{}).AcquireLease(testCtx(t), attrs); !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("err = %v, want ErrNoFreeSubnet", err)
	}
}

func TestAcquireDualStackConcurrent(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	leases, errs := acquireDualStackAtOnce(t, s, 10)
	v4, v6 := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if v4[l.Subnet] || v6[l.IPv6Subnet] {
			t.Errorf("node %d got %s, which shares a subnet with another node", i, l.Key())
		}
		v4[l.Subnet], v6[l.IPv6Subnet] = true, true
	}
}

func TestAcquireRequiresPublicAddress(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`)
	_, err := s.manager(t, Options{}).AcquireLease(testCtx(t), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	if err == nil || !strings.Contains(err.Error(), "no IPv6 public address") {
		t.Fatalf("err = %v, want a complaint about the missing IPv6 address", err)
	}
}

func leaseTTL(t *testing.T, cli *clientv3.Client, key string) (id clientv3.LeaseID, granted, remaining int64) {
	t.Helper()
	resp := getRaw(t, cli, key)
	if len(resp.Kvs) != 1 {
		t.Fatalf("%s is missing", key)
	}
	id = clientv3.LeaseID(resp.Kvs[0].Lease)
	if id == 0 {
		t.Fatalf("%s has no etcd lease", key)
	}
	ttl, err := cli.TimeToLive(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return id, ttl.GrantedTTL, ttl.TTL
}

func TestRenewExtendsTTL(t *testing.T) {
	t.Parallel() // mostly sleeps
	s := startEtcd(t)
	s.put(configKey, netConf)
	m := s.manager(t, Options{LeaseTTL: 10 * time.Second})
	l := acquire(t, m, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	key := subnetsPath + l.Key()
	time.Sleep(3 * time.Second)
	_, _, before := leaseTTL(t, s.raw(), key)
	if before > 8 {
		t.Fatalf("TTL %d after 3s, want at most 8", before)
	}
	oldExp := l.Expiration
	if err := m.RenewLease(testCtx(t), l); err != nil {
		t.Fatal(err)
	}
	_, granted, after := leaseTTL(t, s.raw(), key)
	if granted != 10 || after < 9 {
		t.Errorf("after renewal: granted %d, remaining %d; want 10 and at least 9", granted, after)
	}
	if !l.Expiration.After(oldExp.Add(2 * time.Second)) {
		t.Errorf("Expiration moved from %s to %s, want about 3s later", oldExp, l.Expiration)
	}
}

func TestRenewAfterLeaseRevoked(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	m := s.manager(t, Options{LeaseTTL: time.Minute})
	l := acquire(t, m, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	key := subnetsPath + l.Key()
	cli := s.raw()
	ctx := testCtx(t)
	wantValue := string(getRaw(t, cli, key).Kvs[0].Value)

	t.Run("key expired", func(t *testing.T) {
		id, _, _ := leaseTTL(t, cli, key)
		if _, err := cli.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
		if n := len(getRaw(t, cli, key).Kvs); n != 0 {
			t.Fatal("revoking the etcd lease did not delete the key")
		}
		if err := m.RenewLease(ctx, l); err != nil {
			t.Fatal(err)
		}
		resp := getRaw(t, cli, key)
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != wantValue {
			t.Fatalf("after renewal etcd holds %v, want %s", resp.Kvs, wantValue)
		}
		newID, granted, _ := leaseTTL(t, cli, key)
		if newID == id || granted != 60 {
			t.Errorf("new etcd lease %x (old %x) with TTL %d, want a fresh one with 60", newID, id, granted)
		}
	})
	t.Run("key without lease", func(t *testing.T) {
		if _, err := cli.Put(ctx, key, wantValue); err != nil {
			t.Fatal(err)
		}
		if err := m.RenewLease(ctx, l); err != nil {
			t.Fatal(err)
		}
		leaseTTL(t, cli, key)
	})
	t.Run("subnet taken meanwhile", func(t *testing.T) {
		id, _, _ := leaseTTL(t, cli, key)
		if _, err := cli.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, `{"PublicIP":"198.51.100.99","BackendType":"vxlan"}`); err != nil {
			t.Fatal(err)
		}
		err := m.RenewLease(ctx, l)
		if err == nil || !strings.Contains(err.Error(), "held by node 198.51.100.99") || !errors.Is(err, subnet.ErrLeaseTaken) {
			t.Fatalf("err = %v, want ErrLeaseTaken naming the new holder", err)
		}
	})
}

// A foreign value written over our key in place is another writer's doing:
// renewal fails without ErrLeaseTaken and ReassertLease writes ours back.
// A key created after ours was deleted is another node's lease: renewal
// fails with ErrLeaseTaken and ReassertLease leaves it alone.
func TestRenewForeignValue(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	m := s.manager(t, Options{LeaseTTL: time.Minute})
	l := acquire(t, m, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	key := subnetsPath + l.Key()
	cli := s.raw()
	ctx := testCtx(t)
	const foreign = `{"PublicIP":"198.51.100.99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:99:99:99:99:99"}}`

	resp, err := cli.Put(ctx, key, foreign)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RenewLease(ctx, l); err == nil || errors.Is(err, subnet.ErrLeaseTaken) {
		t.Fatalf("renew over an in-place overwrite: %v, want a retryable error", err)
	}
	if wrote, err := m.ReassertLease(ctx, l, resp.Header.Revision); !wrote || err != nil {
		t.Fatalf("ReassertLease over an in-place overwrite: wrote=%v err=%v, want it written back", wrote, err)
	}
	if err := m.RenewLease(ctx, l); err != nil {
		t.Fatalf("renew after writing back: %v", err)
	}

	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if resp, err = cli.Put(ctx, key, foreign); err != nil {
		t.Fatal(err)
	}
	if wrote, err := m.ReassertLease(ctx, l, resp.Header.Revision); wrote || err != nil {
		t.Fatalf("ReassertLease over another node's new lease: wrote=%v err=%v, want it left alone", wrote, err)
	}
	err = m.RenewLease(ctx, l)
	if !errors.Is(err, subnet.ErrLeaseTaken) || !strings.Contains(err.Error(), "198.51.100.99") {
		t.Fatalf("renew after another node took the subnet: %v, want ErrLeaseTaken naming 198.51.100.99", err)
	}
	if got := string(getRaw(t, cli, key).Kvs[0].Value); got != foreign {
		t.Errorf("the other node's lease became %s", got)
	}
}

// More nodes than subnets race for a tiny network: each subnet goes to
// exactly one node, the etcd value names that node, and the others are told
// the network is full.
func TestAcquireRaceForFewSubnets(t *testing.T) {
	for _, tc := range []struct{ name, conf string }{
		{"ipv4", `{"Network":"10.244.0.0/28","SubnetLen":30}`},
		{"dual stack", `{"Network":"10.244.0.0/28","SubnetLen":30,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/124","IPv6SubnetLen":126}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startEtcd(t)
			s.put(configKey, tc.conf)
			leases, errs := acquireDualStackAtOnce(t, s, 8)
			holders := map[string]string{} // etcd key -> PublicIP
			v4, v6 := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
			for i, l := range leases {
				if errs[i] != nil {
					if !errors.Is(errs[i], subnet.ErrNoFreeSubnet) {
						t.Errorf("node %d: %v", i, errs[i])
					}
					continue
				}
				if v4[l.Subnet] || (l.IPv6Subnet.IsValid() && v6[l.IPv6Subnet]) {
					t.Errorf("node %d got %s, which shares a subnet with another node", i, l.Key())
				}
				v4[l.Subnet], v6[l.IPv6Subnet] = true, true
				holders[subnetsPath+l.Key()] = l.Attrs.PublicIP.String()
			}
			if len(holders) != 3 {
				t.Errorf("%d nodes got a lease, want 3 (the network holds 3 subnets)", len(holders))
			}
			resp := getRaw(t, s.raw(), subnetsPath, clientv3.WithPrefix())
			if len(resp.Kvs) != len(holders) {
				t.Errorf("etcd holds %d leases, %d nodes think they have one", len(resp.Kvs), len(holders))
			}
			for _, kv := range resp.Kvs {
				var a lease.Attrs
				if err := json.Unmarshal(kv.Value, &a); err != nil || holders[string(kv.Key)] != a.PublicIP.String() {
					t.Errorf("%s belongs to %s in etcd, but to %q according to AcquireLease", kv.Key, a.PublicIP, holders[string(kv.Key)])
				}
			}
		})
	}
}

// acquireDualStackAtOnce has n dual-stack nodes, each with its own manager
// and addresses, acquire leases at the same moment.
func acquireDualStackAtOnce(t *testing.T, s *etcdServer, n int) ([]*lease.Lease, []error) {
	t.Helper()
	leases := make([]*lease.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		m := s.manager(t, Options{})
		attrs := vxlanAttrs(fmt.Sprintf("198.51.100.%d", 10+i), "ae:00:00:00:00:01")
		attrs.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("fd00:198:51:100::%d", 10+i))
		wg.Go(func() { leases[i], errs[i] = m.AcquireLease(testCtx(t), attrs) })
	}
	wg.Wait()
	return leases, errs
}
