package udp

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(nil)
	if err != nil || o.Port != 8285 || o.MTU != 0 {
		t.Errorf("defaults: %+v %v, want Port 8285", o, err)
	}
	o, err = parseOptions([]byte(`{"Type":"udp","Port":9000,"MTU":9000}`))
	if err != nil || o.Port != 9000 || o.MTU != 9000 {
		t.Errorf("explicit: %+v %v", o, err)
	}
	for _, bad := range []string{`{"Port":0}`, `{"Port":70000}`, `{"MTU":600}`, `{"Port":"x"}`} {
		if _, err := parseOptions([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func ipv4Packet(dst string) []byte {
	pkt := make([]byte, 20)
	pkt[0] = 0x45
	a := netip.MustParseAddr(dst).As4()
	copy(pkt[16:], a[:])
	return pkt
}

// The table finds the node owning a destination, longest subnet first,
// and nothing for addresses no node owns or packets that are not IPv4.
func TestPeerTableLookup(t *testing.T) {
	tab := newPeerTable([]peer{
		{subnet: netip.MustParsePrefix("10.244.1.0/24"), addr: netip.MustParseAddr("198.51.100.2"), port: 8285},
		{subnet: netip.MustParsePrefix("10.244.2.0/24"), addr: netip.MustParseAddr("198.51.100.3"), port: 8285},
		{subnet: netip.MustParsePrefix("10.244.2.128/25"), addr: netip.MustParseAddr("198.51.100.4"), port: 8286},
	})
	for dst, want := range map[string]string{
		"10.244.1.7":   "198.51.100.2:8285",
		"10.244.2.7":   "198.51.100.3:8285",
		"10.244.2.200": "198.51.100.4:8286",
		"10.244.3.1":   "",
	} {
		got := ""
		if ep := tab.lookup(ipv4Packet(dst)); ep != nil {
			got = ep.(*conn.StdNetEndpoint).AddrPort.String()
		}
		if got != want {
			t.Errorf("lookup %s = %q, want %q", dst, got, want)
		}
	}
	v6 := make([]byte, 40)
	v6[0] = 0x60
	if tab.lookup(v6) != nil || tab.lookup([]byte{0x45}) != nil {
		t.Error("an IPv6 or truncated packet found a peer")
	}
}
