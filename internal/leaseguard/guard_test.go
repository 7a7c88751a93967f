package leaseguard

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

type fakeHost []HostPrefix

func (f fakeHost) Prefixes() ([]HostPrefix, error) { return f, nil }

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

func newGuard(t *testing.T) *Guard {
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

func TestGuardRefusesByName(t *testing.T) {
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
		g := newGuard(t)
		out, fresh, err := g.Filter([]lease.Event{{Type: lease.Added, Lease: mustLease(t, tc.key, tc.value)}})
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

func TestGuardTurnsBadUpdateIntoRemoval(t *testing.T) {
	g := newGuard(t)
	good := mustLease(t, "10.244.3.0-24", `{"PublicIP":"198.51.100.13"}`)
	bad := mustLease(t, "10.244.3.0-24", `{"PublicIP":"127.0.0.1"}`)
	out, _, _ := g.Filter([]lease.Event{{Type: lease.Added, Lease: good}})
	if len(out) != 1 || out[0].Type != lease.Added {
		t.Fatalf("good lease: %v", out)
	}
	// A host-gw route the backend installed for an accepted lease is not foreign.
	plain := g.host
	g.host = append(g.host.(fakeHost), HostPrefix{Prefix: netip.MustParsePrefix("10.244.3.0/24"), Route: true, What: "route 10.244.3.0/24 via 198.51.100.13 dev eth0"})
	out, fresh, _ := g.Filter([]lease.Event{{Type: lease.Added, Lease: good}})
	if len(out) != 1 || len(fresh) != 0 {
		t.Fatalf("re-announced good lease: %v %v", out, fresh)
	}
	out, fresh, _ = g.Filter([]lease.Event{{Type: lease.Added, Lease: bad}})
	if len(out) != 1 || out[0].Type != lease.Removed || out[0].Lease.Attrs.PublicIP != good.Attrs.PublicIP || len(fresh) != 1 {
		t.Fatalf("bad update: %v %v; want removal of the good one and a rejection", out, fresh)
	}
	g.host = plain // the backend removed its route
	// Reported once; its deletion is nothing to the backend.
	if _, fresh, _ = g.Filter([]lease.Event{{Type: lease.Added, Lease: bad}}); len(fresh) != 0 {
		t.Errorf("same refusal reported again: %v", fresh)
	}
	if out, _, _ = g.Filter([]lease.Event{{Type: lease.Removed, Lease: bad}}); len(out) != 0 {
		t.Errorf("removal of a refused lease passed: %v", out)
	}
	// A lease overlapping an accepted one is refused.
	g.Filter([]lease.Event{{Type: lease.Added, Lease: good}})
	_, fresh, _ = g.Filter([]lease.Event{{Type: lease.Added, Lease: mustLease(t, "10.244.2.0-23", `{"PublicIP":"198.51.100.14"}`)}})
	if len(fresh) != 1 || fresh[0].Reason != OverlapsLease {
		t.Errorf("overlapping lease: %v", fresh)
	}
}

// After a restart the routes a backend installed for peers are still in
// place: they are the leases' own, not foreign state; a route for a wider
// or narrower prefix, or a connected one, is not excused.
func TestGuardExcusesRoutesOfEarlierRun(t *testing.T) {
	g := newGuard(t)
	g.host = append(g.host.(fakeHost),
		HostPrefix{Prefix: netip.MustParsePrefix("10.244.4.0/24"), Route: true, What: "route 10.244.4.0/24 dev ipsec0"},
		HostPrefix{Prefix: netip.MustParsePrefix("10.244.5.0/25"), Route: true, What: "route 10.244.5.0/25 via 198.51.100.1 dev eth0"})
	out, fresh, _ := g.Filter([]lease.Event{
		{Type: lease.Added, Lease: mustLease(t, "10.244.4.0-24", `{"PublicIP":"198.51.100.14"}`)},
		{Type: lease.Added, Lease: mustLease(t, "10.244.5.0-24", `{"PublicIP":"198.51.100.15"}`)},
	})
	if len(out) != 1 || out[0].Lease.Key() != "10.244.4.0-24" || len(fresh) != 1 || fresh[0].Reason != OverlapsHost {
		t.Errorf("passed %v, refused %v; want 10.244.4.0-24 through and 10.244.5.0-24 refused for the /25", out, fresh)
	}
}

// The guard keeps only an accepted lease's attributes; a removal (also one
// that names only the key, as after a re-list) must still hand the backend
// the subnets and attributes it was given, and free the subnets for reuse.
func TestGuardRemovalCarriesAcceptedLease(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	own := mustLease(t, "10.244.1.0-24&fd00:10:244:1::-64", `{"PublicIP":"198.51.100.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan"}`)
	g := New(cfg, &own, fakeHost{})
	l := mustLease(t, "10.244.3.0-24&fd00:10:244:3::-64", `{"PublicIP":"198.51.100.13","PublicIPv6":"2001:db8::13","BackendType":"vxlan","BackendData":{"VtepMAC":"ae:11:22:33:44:55"}}`)
	// An unmasked subnet, which no subnet manager hands out, keeps its key.
	odd := lease.Lease{Subnet: netip.MustParsePrefix("10.244.4.7/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:4::/64"), Attrs: l.Attrs}
	if out, fresh, _ := g.Filter([]lease.Event{{Type: lease.Added, Lease: l}, {Type: lease.Added, Lease: odd}}); len(out) != 2 || len(fresh) != 0 {
		t.Fatalf("accept: passed %v, refused %v", out, fresh)
	}
	out, _, _ := g.Filter([]lease.Event{
		{Type: lease.Removed, Lease: lease.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet}},
		{Type: lease.Removed, Lease: lease.Lease{Subnet: odd.Subnet, IPv6Subnet: odd.IPv6Subnet}},
	})
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
	if len(g.accepted) != 0 || len(g.odd) != 0 || len(g.index) != 0 || len(g.lens) != 0 {
		t.Errorf("after the removals the guard still holds accepted %v odd %v index %v lens %v", g.accepted, g.odd, g.index, g.lens)
	}
	// The subnets are free again: a new lease for them passes.
	if out, fresh, _ := g.Filter([]lease.Event{{Type: lease.Added, Lease: mustLease(t, "10.244.3.0-24&fd00:10:244:3::-64", `{"PublicIP":"198.51.100.23","PublicIPv6":"2001:db8::23","BackendType":"vxlan"}`)}}); len(out) != 1 || len(fresh) != 0 {
		t.Errorf("re-use of freed subnets: passed %v, refused %v", out, fresh)
	}
}
