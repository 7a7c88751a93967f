package leaseset

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
)

// fakeHost is a node's addresses and routes, given up front.
type fakeHost []HostPrefix

func (f fakeHost) Prefixes() ([]HostPrefix, error) { return f, nil }

// recorder is a Receiver that keeps every batch it was handed.
type recorder struct{ batches [][]lease.Event }

func (r *recorder) HandleEvents(_ context.Context, evs []lease.Event) {
	r.batches = append(r.batches, evs)
}

// filter applies one batch and returns what the receiver got, the new
// rejections and the host error, as the guard's Filter did.
func filter(t *testing.T, s *Set, batch ...lease.Event) ([]lease.Event, []Rejection, error) {
	t.Helper()
	r := &recorder{}
	o := s.Apply(context.Background(), batch, false, r)
	if len(r.batches) != 1 || len(r.batches[0]) != len(o.Applied) {
		t.Fatalf("receiver got %v, Outcome says %v", r.batches, o.Applied)
	}
	return o.Applied, o.Rejected, o.HostErr
}

func added(l lease.Lease) lease.Event   { return lease.Event{Type: lease.Added, Lease: l} }
func removed(l lease.Lease) lease.Event { return lease.Event{Type: lease.Removed, Lease: l} }

func mustLease(t *testing.T, key, value string) lease.Lease {
	t.Helper()
	v4, v6, err := lease.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var a lease.Attrs
	if err := json.Unmarshal([]byte(value), &a); err != nil {
		t.Fatal(err)
	}
	return lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: a}
}

func newSet(t *testing.T) *Set {
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	own := mustLease(t, "10.244.1.0-24", `{"PublicIP":"198.51.100.11","BackendType":"vxlan"}`)
	host := fakeHost{
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Route: true, Connected: true, What: "route 198.51.100.0/24 dev eth0"},
		{Prefix: netip.MustParsePrefix("198.51.100.11/32"), What: "address 198.51.100.11/24 on eth0"},
		{Prefix: netip.MustParsePrefix("10.244.200.0/24"), Route: true, Connected: true, What: "route 10.244.200.0/24 dev docker0"},
		{Prefix: netip.MustParsePrefix("10.244.1.0/24"), What: "route 10.244.1.0/24 dev cni0"},
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), What: "route 0.0.0.0/0 via 198.51.100.1 dev eth0"},
	}
	return New(cfg, &own, host)
}

func TestSetRefusesByName(t *testing.T) {
	for _, tc := range []struct{ key, value, reason, mention string }{
		{"198.51.100.0-24", `{"PublicIP":"198.51.100.99"}`, OutsideNetwork, "10.244.0.0/16"},
		{"10.0.0.0-8", `{"PublicIP":"198.51.100.99"}`, OutsideNetwork, "10.0.0.0/8"},
		{"10.244.0.0-16", `{"PublicIP":"198.51.100.99"}`, OverlapsOwn, "10.244.1.0/24"},
		{"10.244.200.0-24", `{"PublicIP":"198.51.100.99"}`, OverlapsHost, "docker0"},
		{"10.244.3.0-24", `{"PublicIP":"0.0.0.0"}`, BadPublicIP, "unset"},
		{"10.244.3.0-24", `{"PublicIP":"127.0.0.1"}`, BadPublicIP, "loopback"},
		{"10.244.3.0-24", `{"PublicIP":"224.0.0.1"}`, BadPublicIP, "multicast"},
		{"10.244.3.0-24", `{"PublicIP":"169.254.1.1"}`, BadPublicIP, "link-local"},
		{"10.244.3.0-24", `{"PublicIP":"255.255.255.255"}`, BadPublicIP, "broadcast"},
		{"10.244.3.0-24", `{"PublicIP":"2001:db8::1"}`, BadPublicIP, "family"},
		{"10.244.3.0-24", `{"PublicIP":"198.51.100.11"}`, OwnPublicIP, "own address"},
		{"fd00::-64", `{"PublicIP":"198.51.100.99"}`, MissingSubnet, "IPv4"},
	} {
		s := newSet(t)
		out, fresh, err := filter(t, s, added(mustLease(t, tc.key, tc.value)))
		if err != nil || len(out) != 0 || len(fresh) != 1 {
			t.Errorf("%s %s: passed %v, rejections %v, host error %v; want one rejection", tc.key, tc.value, out, fresh, err)
			continue
		}
		r := fresh[0]
		if r.Key != tc.key || r.Reason != tc.reason || !strings.Contains(r.String(), tc.mention) {
			t.Errorf("%s %s: %s; want reason %s naming %q", tc.key, tc.value, r, tc.reason, tc.mention)
		}
	}
}

func TestSetTurnsBadUpdateIntoRemoval(t *testing.T) {
	s := newSet(t)
	good := mustLease(t, "10.244.3.0-24", `{"PublicIP":"198.51.100.13"}`)
	bad := mustLease(t, "10.244.3.0-24", `{"PublicIP":"127.0.0.1"}`)
	out, _, _ := filter(t, s, added(good))
	if len(out) != 1 || out[0].Type != lease.Added {
		t.Fatalf("good lease: %v", out)
	}
	// A host-gw route the backend installed for an accepted lease is not foreign.
	plain := s.host
	s.host = append(s.host.(fakeHost), HostPrefix{Prefix: netip.MustParsePrefix("10.244.3.0/24"), Route: true, What: "route 10.244.3.0/24 via 198.51.100.13 dev eth0"})
	out, fresh, _ := filter(t, s, added(good))
	if len(out) != 1 || len(fresh) != 0 {
		t.Fatalf("re-announced good lease: %v %v", out, fresh)
	}
	out, fresh, _ = filter(t, s, added(bad))
	if len(out) != 1 || out[0].Type != lease.Removed || out[0].Lease.Attrs.PublicIP != good.Attrs.PublicIP || len(fresh) != 1 {
		t.Fatalf("bad update: %v %v; want removal of the good one and a rejection", out, fresh)
	}
	s.host = plain // the backend removed its route
	// Reported once; its deletion is nothing to the backend.
	if _, fresh, _ = filter(t, s, added(bad)); len(fresh) != 0 {
		t.Errorf("same refusal reported again: %v", fresh)
	}
	if out, _, _ = filter(t, s, removed(bad)); len(out) != 0 {
		t.Errorf("removal of a refused lease passed: %v", out)
	}
	// A lease overlapping an accepted one is refused.
	filter(t, s, added(good))
	_, fresh, _ = filter(t, s, added(mustLease(t, "10.244.2.0-23", `{"PublicIP":"198.51.100.14"}`)))
	if len(fresh) != 1 || fresh[0].Reason != OverlapsLease {
		t.Errorf("overlapping lease: %v", fresh)
	}
}

// After a restart the routes a backend installed for peers are still in
// place: they are the leases' own, not foreign state; a route for a wider
// or narrower prefix, or a connected one, is not excused.
func TestSetExcusesRoutesOfEarlierRun(t *testing.T) {
	s := newSet(t)
	s.host = append(s.host.(fakeHost),
		HostPrefix{Prefix: netip.MustParsePrefix("10.244.4.0/24"), Route: true, What: "route 10.244.4.0/24 dev ipsec0"},
		HostPrefix{Prefix: netip.MustParsePrefix("10.244.5.0/25"), Route: true, What: "route 10.244.5.0/25 via 198.51.100.1 dev eth0"})
	out, fresh, _ := filter(t, s,
		added(mustLease(t, "10.244.4.0-24", `{"PublicIP":"198.51.100.14"}`)),
		added(mustLease(t, "10.244.5.0-24", `{"PublicIP":"198.51.100.15"}`)),
	)
	if len(out) != 1 || out[0].Lease.Key() != "10.244.4.0-24" || len(fresh) != 1 || fresh[0].Reason != OverlapsHost {
		t.Errorf("passed %v, refused %v; want 10.244.4.0-24 through and 10.244.5.0-24 refused for the /25", out, fresh)
	}
}

// A removal (also one
// that names only the key, as after a re-list) must still hand the backend
// the subnets and attributes it was given, and free the subnets for reuse.
func TestSetRemovalCarriesAcceptedLease(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	own := mustLease(t, "10.244.1.0-24&fd00:10:244:1::-64", `{"PublicIP":"198.51.100.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan"}`)
	s := New(cfg, &own, fakeHost{})
	l := mustLease(t, "10.244.3.0-24&fd00:10:244:3::-64", `{"PublicIP":"198.51.100.13","PublicIPv6":"2001:db8::13","BackendType":"vxlan","BackendData":{"VtepMAC":"ae:11:22:33:44:55"}}`)
	// An unmasked subnet, which no subnet manager hands out, keeps its key.
	odd := lease.Lease{Subnet: netip.MustParsePrefix("10.244.4.7/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:4::/64"), Attrs: l.Attrs}
	if out, fresh, _ := filter(t, s, added(l), added(odd)); len(out) != 2 || len(fresh) != 0 {
		t.Fatalf("accept: passed %v, refused %v", out, fresh)
	}
	out, _, _ := filter(t, s,
		removed(lease.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet}),
		removed(lease.Lease{Subnet: odd.Subnet, IPv6Subnet: odd.IPv6Subnet}),
	)
	if len(out) != 2 {
		t.Fatalf("removals: %v", out)
	}
	for i, want := range []lease.Lease{l, odd} {
		got := out[i].Lease
		if out[i].Type != lease.Removed || got.Key() != want.Key() || got.Subnet != want.Subnet || got.IPv6Subnet != want.IPv6Subnet ||
			got.Attrs.PublicIP != want.Attrs.PublicIP || got.Attrs.PublicIPv6 != want.Attrs.PublicIPv6 ||
			got.Attrs.BackendType != "vxlan" || string(got.Attrs.BackendData) != string(want.Attrs.BackendData) {
			t.Errorf("removal %d = %v %+v, want the accepted lease %+v", i, out[i].Type, got, want)
		}
	}
	if s.Len() != 0 || s.Accepted() != 0 || len(s.index) != 0 || len(s.lens) != 0 {
		t.Errorf("after the removals the set still holds %d leases (%d accepted), index %v lens %v", s.Len(), s.Accepted(), s.index, s.lens)
	}
	// The subnets are free again: a new lease for them passes.
	if out, fresh, _ := filter(t, s, added(mustLease(t, "10.244.3.0-24&fd00:10:244:3::-64", `{"PublicIP":"198.51.100.23","PublicIPv6":"2001:db8::23","BackendType":"vxlan"}`))); len(out) != 1 || len(fresh) != 0 {
		t.Errorf("re-use of freed subnets: passed %v, refused %v", out, fresh)
	}
}

// A re-established watch sends the whole set again: what it lacks is
// removed first, with the attributes the receivers were given (etcd's
// re-list knows only the keys that remain), and a refused lease that
// vanished leaves without a word to them. Every receiver gets every
// batch, an empty one too.
func TestSetSnapshotRemovesWhatVanished(t *testing.T) {
	s := newSet(t)
	kept := mustLease(t, "10.244.2.0-24", `{"PublicIP":"198.51.100.12","BackendType":"vxlan","BackendData":{"VtepMAC":"ae:00:00:00:00:02"}}`)
	gone := mustLease(t, "10.244.3.0-24", `{"PublicIP":"198.51.100.13","BackendType":"vxlan","BackendData":{"VtepMAC":"ae:00:00:00:00:03"}}`)
	bad := mustLease(t, "10.244.4.0-24", `{"PublicIP":"127.0.0.1"}`)
	filter(t, s, added(kept), added(gone), added(bad))
	if s.Len() != 3 || s.Accepted() != 2 {
		t.Fatalf("holds %d leases, %d accepted; want 3 and 2", s.Len(), s.Accepted())
	}
	a, b := &recorder{}, &recorder{}
	o := s.Apply(context.Background(), []lease.Event{added(kept)}, true, a, b)
	if len(o.Applied) != 2 || o.Applied[0].Type != lease.Removed || o.Applied[0].Lease.Key() != gone.Key() ||
		string(o.Applied[0].Lease.Attrs.BackendData) != string(gone.Attrs.BackendData) || o.Applied[0].Lease.Attrs.PublicIP != gone.Attrs.PublicIP ||
		o.Applied[1].Type != lease.Added || o.Applied[1].Lease.Key() != kept.Key() {
		t.Fatalf("applied %v; want the removal of %s with its attributes, then %s", o.Applied, gone.String(), kept.String())
	}
	if s.Len() != 1 || s.Accepted() != 1 {
		t.Errorf("holds %d leases, %d accepted; want 1 and 1", s.Len(), s.Accepted())
	}
	s.Apply(context.Background(), nil, false, a, b)
	for i, r := range []*recorder{a, b} {
		if len(r.batches) != 2 || len(r.batches[0]) != 2 || len(r.batches[1]) != 0 {
			t.Errorf("receiver %d got %v; want the two events, then an empty batch", i, r.batches)
		}
	}
}

// Another node advertising this node's address is reported once per
// lease, and again only after its lease was removed and came back.
func TestSetReportsTwinOnce(t *testing.T) {
	logs := tbtest.CaptureLogs(t)
	s := newSet(t)
	twin := mustLease(t, "10.244.7.0-24", `{"PublicIP":"198.51.100.11","BackendType":"vxlan"}`)
	reports := func() int { return len(logs.Errors("duplicate public address", twin.Key(), "10.244.1.0-24")) }
	filter(t, s, added(twin))
	filter(t, s, added(twin))
	if n := reports(); n != 1 {
		t.Fatalf("reported %d times, want once", n)
	}
	filter(t, s, removed(twin))
	filter(t, s, added(twin))
	if n := reports(); n != 2 {
		t.Errorf("reported %d times after the lease came back, want twice", n)
	}
}
