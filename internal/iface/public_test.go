package iface

import (
	"net/netip"
	"strings"
	"testing"
)

// One case per class of address no peer can send to, for each flag; the
// message names the flag and gives a valid example.
func TestSelectRefusesSpecialPublicIP(t *testing.T) {
	for _, tc := range []struct {
		opts      Options
		flag, why string
	}{
		{Options{PublicIP: netip.MustParseAddr("0.0.0.0")}, "--public-ip 0.0.0.0", "unspecified"},
		{Options{PublicIP: netip.MustParseAddr("127.0.0.1")}, "--public-ip 127.0.0.1", "loopback"},
		{Options{PublicIP: netip.MustParseAddr("239.1.2.3")}, "--public-ip 239.1.2.3", "multicast"},
		{Options{PublicIP: netip.MustParseAddr("255.255.255.255")}, "--public-ip 255.255.255.255", "broadcast"},
		{Options{PublicIPv6: netip.MustParseAddr("::"), EnableIPv6: true}, "--public-ipv6 ::", "unspecified"},
		{Options{PublicIPv6: netip.MustParseAddr("::1"), EnableIPv6: true}, "--public-ipv6 ::1", "loopback"},
		{Options{PublicIPv6: netip.MustParseAddr("ff02::1"), EnableIPv6: true}, "--public-ipv6 ff02::1", "multicast"},
	} {
		_, err := Select(tc.opts)
		if err == nil {
			t.Errorf("%s accepted", tc.flag)
			continue
		}
		example := "--public-ip=10.0.0.5"
		if strings.HasPrefix(tc.flag, "--public-ipv6") {
			example = "--public-ipv6=fd00::5"
		}
		for _, w := range []string{tc.flag, tc.why, example} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.flag, err, w)
			}
		}
	}
	for _, ok := range []string{"10.0.0.5", "198.51.100.2", "fd00::5", "169.254.1.1", "fe80::1"} {
		flag := "public-ip"
		if strings.Contains(ok, ":") {
			flag = "public-ipv6"
		}
		if err := CheckPublicAddr(flag, netip.MustParseAddr(ok)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}
