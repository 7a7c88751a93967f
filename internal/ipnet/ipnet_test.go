package ipnet

import (
	"net"
	"net/netip"
	"testing"
)

func TestPrefix(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *net.IPNet
		want string // "" for not ok
	}{
		{"nil", nil, ""},
		{"interface address keeps host bits", &net.IPNet{IP: net.IP{10, 244, 1, 1}, Mask: net.CIDRMask(24, 32)}, "10.244.1.1/24"},
		{"v4-mapped 16-byte address with a 32-bit mask", &net.IPNet{IP: net.ParseIP("10.244.1.0"), Mask: net.CIDRMask(24, 32)}, "10.244.1.0/24"},
		{"IPv6", &net.IPNet{IP: net.ParseIP("fd00:10:244::"), Mask: net.CIDRMask(56, 128)}, "fd00:10:244::/56"},
		{"IPv4 address with an IPv6-sized mask", &net.IPNet{IP: net.IP{10, 244, 1, 0}, Mask: net.CIDRMask(24, 128)}, ""},
		{"non-canonical mask", &net.IPNet{IP: net.IP{10, 244, 1, 0}, Mask: net.IPMask{255, 0, 255, 0}}, ""},
		{"no address", &net.IPNet{IP: net.IP{1, 2, 3}, Mask: net.CIDRMask(24, 32)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := Prefix(tc.in)
			got := ""
			if ok {
				got = p.String()
			}
			if got != tc.want {
				t.Errorf("Prefix(%v) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestFromPrefixRoundTrips(t *testing.T) {
	for _, s := range []string{"10.244.1.1/24", "0.0.0.0/0", "fd00:10:244::1/64", "198.51.100.7/32"} {
		p := netip.MustParsePrefix(s)
		back, ok := Prefix(FromPrefix(p))
		if !ok || back != p {
			t.Errorf("%s -> %v -> %v (ok %v)", s, FromPrefix(p), back, ok)
		}
	}
}
