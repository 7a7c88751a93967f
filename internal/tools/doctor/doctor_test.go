package doctor

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

func leaseAt(subnet, pub string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan"}}
}

// The Vagrant pattern (every VM's NAT NIC is 10.0.2.15) is told apart from
// an ordinary duplicate, and each gets its own fix.
func TestPublicAddress(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leases []lease.Lease
		own    int // index of this node's lease
		status Status
		want   []string
	}{
		{"distinct", []lease.Lease{leaseAt("10.244.1.0/24", "198.51.100.11"), leaseAt("10.244.2.0/24", "198.51.100.12")}, 0, OK, []string{"2 leases"}},
		{"duplicate", []lease.Lease{leaseAt("10.244.1.0/24", "198.51.100.11"), leaseAt("10.244.2.0/24", "198.51.100.11")}, 0, Problem,
			[]string{"duplicate public address", "PublicIP 198.51.100.11 is advertised by 2 leases: 10.244.1.0-24, 10.244.2.0-24", "--public-ip"}},
		{"vagrant", []lease.Lease{leaseAt("10.244.1.0/24", "10.0.2.15"), leaseAt("10.244.2.0/24", "10.0.2.15")}, 1, Problem,
			[]string{"Vagrant NAT pattern", "10.0.2.15", "--iface=eth1"}},
		{"vagrant alone", []lease.Lease{leaseAt("10.244.1.0/24", "10.0.2.15")}, 0, Problem, []string{"Vagrant NAT pattern", "this node's PublicIP is 10.0.2.15 on eth0"}},
	} {
		f := &facts{cfg: &config.Config{}, leases: tc.leases, own: &tc.leases[tc.own], local: map[netip.Addr]string{tc.leases[tc.own].Attrs.PublicIP: "eth0"}}
		r := f.checkPublicAddress(context.Background())
		text := r.Summary + " " + strings.Join(r.Evidence, " ") + " " + r.Fix
		if r.Status != tc.status {
			t.Errorf("%s: status %s, want %s: %s", tc.name, r.Status, tc.status, text)
		}
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: %q lacks %q", tc.name, text, w)
			}
		}
	}
}
