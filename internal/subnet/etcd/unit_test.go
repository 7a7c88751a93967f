package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/harness/leasewatch"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnet"
)

func parseConf(t *testing.T, s string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func takenOf(v4, v6 []netip.Prefix) taken {
	t := taken{v4: map[netip.Prefix]bool{}, v6: map[netip.Prefix]bool{}}
	for _, p := range v4 {
		t.v4[p] = true
	}
	for _, p := range v6 {
		t.v6[p] = true
	}
	return t
}

func TestPickFreeFallsBackToScan(t *testing.T) {
	cfg := parseConf(t, `{"Network":"10.244.0.0/28","SubnetLen":30}`)
	used := takenOf([]netip.Prefix{cfg.NthSubnet(0), cfg.NthSubnet(1)}, nil)
	// A "random" source stuck on a used subnet must not hide the free one.
	v4, _, err := pickFree(cfg, used, func(int) int { return 0 })
	if err != nil || v4 != cfg.NthSubnet(2) {
		t.Fatalf("pickFree = %s, %v; want %s", v4, err, cfg.NthSubnet(2))
	}
}

func TestPickFreeFull(t *testing.T) {
	cfg := parseConf(t, `{"Network":"10.244.0.0/28","SubnetLen":30}`)
	used := takenOf([]netip.Prefix{cfg.NthSubnet(0), cfg.NthSubnet(1), cfg.NthSubnet(2)}, nil)
	_, _, err := pickFree(cfg, used, func(n int) int { return n - 1 })
	if !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("err = %v, want ErrNoFreeSubnet", err)
	}
	if want := "no free subnet in network 10.244.0.0/28 (SubnetLen /30, 3 subnets between SubnetMin 10.244.0.4 and SubnetMax 10.244.0.12, all leased)"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\nwant prefix %q", err, want)
	}
}

func TestPickFreeIsRandomAndInRange(t *testing.T) {
	cfg := parseConf(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`)
	seen := map[netip.Prefix]bool{}
	for range 50 {
		v4, v6, err := pickFree(cfg, takenOf(nil, nil), rand.IntN)
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.Network.Contains(v4.Addr()) || v4.Bits() != 24 || v4.Addr().Compare(cfg.SubnetMin) < 0 || v4.Addr().Compare(cfg.SubnetMax) > 0 {
			t.Errorf("v4 %s outside the allocation range", v4)
		}
		if !cfg.IPv6Network.Contains(v6.Addr()) || v6.Bits() != 64 {
			t.Errorf("v6 %s outside %s", v6, cfg.IPv6Network)
		}
		seen[v4] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 picks gave only %d distinct subnets: not random", len(seen))
	}
}

func TestPickFreeDualStackPerFamily(t *testing.T) {
	cfg := parseConf(t, `{"Network":"10.244.0.0/28","SubnetLen":30,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/124","IPv6SubnetLen":126}`)
	// Free IPv4 subnets remain, IPv6 is full: no lease.
	used := takenOf([]netip.Prefix{cfg.NthSubnet(0)}, []netip.Prefix{cfg.NthIPv6Subnet(0), cfg.NthIPv6Subnet(1), cfg.NthIPv6Subnet(2)})
	_, _, err := pickFree(cfg, used, rand.IntN)
	if !errors.Is(err, subnet.ErrNoFreeSubnet) || !strings.Contains(err.Error(), "fd00:10:244::/124") {
		t.Fatalf("err = %v, want ErrNoFreeSubnet naming the IPv6 network", err)
	}
}

func mkLease(key, mac string) lease.Lease {
	v4, v6, err := lease.ParseKey(key)
	if err != nil {
		panic(err)
	}
	return lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: lease.Attrs{
		PublicIP: netip.MustParseAddr("198.51.100.1"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VtepMAC":"` + mac + `"}`),
	}}
}

func TestDiff(t *testing.T) {
	w := &watcher{seed: maphash.MakeSeed()}
	w.known = knownLeases{
		"10.244.1.0-24": mkLease("10.244.1.0-24", "a").Attrs.Digest(w.seed),
		"10.244.2.0-24": mkLease("10.244.2.0-24", "b").Attrs.Digest(w.seed),
		"10.244.3.0-24": mkLease("10.244.3.0-24", "c").Attrs.Digest(w.seed),
	}
	cur := map[string]lease.Lease{
		"10.244.0.0-24": mkLease("10.244.0.0-24", "new"),
		"10.244.2.0-24": mkLease("10.244.2.0-24", "b"),
		"10.244.3.0-24": mkLease("10.244.3.0-24", "changed"),
		// Same IPv4 subnet, now dual stack: the receiver must drop the old
		// key before it adds the new one.
		"10.244.1.0-24&fd00:10:244:1::-64": mkLease("10.244.1.0-24&fd00:10:244:1::-64", "a"),
	}
	next := knownLeases{}
	for name, l := range cur {
		next[name] = l.Attrs.Digest(w.seed)
	}
	got := diff(w.known, next, cur)
	want := []string{
		"removed 10.244.1.0-24",
		"added 10.244.0.0-24",
		"added 10.244.1.0-24&fd00:10:244:1::-64",
		"added 10.244.3.0-24",
	}
	if len(got) != len(want) {
		t.Fatalf("diff = %s, want %v", leasewatch.Describe(got), want)
	}
	for i, e := range got {
		if s := e.Type.String() + " " + e.Lease.Key(); s != want[i] {
			t.Errorf("event %d = %s, want %s", i, s, want[i])
		}
	}
	// A removal names the lease by its subnets; the daemon's lease guard
	// gives the backend the attributes it accepted.
	if r := got[0].Lease; r.Subnet != netip.MustParsePrefix("10.244.1.0/24") || r.IPv6Subnet.IsValid() {
		t.Errorf("removal %+v: it must carry the subnets the receiver was given", r)
	}
}

func TestOutageLogsOnce(t *testing.T) {
	var downs, ups int
	o := outage{down: func(error) { downs++ }, up: func(time.Duration) { ups++ }}
	o.ok()
	for range 5 {
		o.fail(errors.New("connection refused"))
	}
	o.ok()
	o.ok()
	if downs != 1 || ups != 1 {
		t.Fatalf("logged %d outages and %d recoveries, want 1 and 1", downs, ups)
	}
	o.fail(errors.New("again"))
	if downs != 2 {
		t.Fatal("a second outage must be reported too")
	}
}

func TestBackoffCaps(t *testing.T) {
	b := watchBackoff()
	var last time.Duration
	for range 20 {
		last = b.Next()
		if last > backoffMax*6/5 {
			t.Fatalf("back-off %s exceeds the cap", last)
		}
	}
	if last < backoffMax*4/5 {
		t.Errorf("back-off stuck at %s, want about %s", last, backoffMax)
	}
}

func TestNewValidatesTLSFiles(t *testing.T) {
	_, err := New(Options{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"})
	if err == nil || !strings.Contains(err.Error(), "--etcd-certfile") {
		t.Fatalf("err = %v, want one naming the TLS flags", err)
	}
}

func TestClosedManager(t *testing.T) {
	m, err := New(Options{Endpoints: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "etcd" {
		t.Errorf("Name = %q", m.Name())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.WatchLeases(ctx, make(chan []lease.Event, 1)); !errors.Is(err, errClosed) {
		t.Fatalf("WatchLeases on a closed manager = %v, want errClosed", err)
	}
}
