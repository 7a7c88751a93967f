package config

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func mustParse(t *testing.T, s string) *Config {
	t.Helper()
	c, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%s): %v", s, err)
	}
	return c
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestParseUpstreamVXLANExample(t *testing.T) {
	c := mustParse(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	if !c.EnableIPv4 || c.EnableIPv6 || c.EnableNFTables {
		t.Errorf("families: v4=%v v6=%v nft=%v, want true false false", c.EnableIPv4, c.EnableIPv6, c.EnableNFTables)
	}
	if c.Network != pfx("10.244.0.0/16") {
		t.Errorf("Network = %v", c.Network)
	}
	if c.SubnetLen != 24 {
		t.Errorf("SubnetLen = %d, want 24", c.SubnetLen)
	}
	if c.SubnetMin != addr("10.244.1.0") || c.SubnetMax != addr("10.244.255.0") {
		t.Errorf("range = %v..%v, want 10.244.1.0..10.244.255.0", c.SubnetMin, c.SubnetMax)
	}
	if c.SubnetCount() != 255 {
		t.Errorf("SubnetCount = %d, want 255", c.SubnetCount())
	}
	if c.BackendType != "vxlan" || string(c.Backend) != `{"Type":"vxlan"}` {
		t.Errorf("backend = %q %s", c.BackendType, c.Backend)
	}
	if c.IPv6Network.IsValid() || c.IPv6SubnetLen != 0 || c.IPv6SubnetMin.IsValid() {
		t.Errorf("IPv6 fields set on an IPv4-only network: %v %d %v", c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin)
	}
	if c.IPv6SubnetCount() != 0 || c.NthIPv6Subnet(0).IsValid() {
		t.Errorf("IPv6 subnets on an IPv4-only network")
	}
}

func TestParseHostGWKeepsBackendOptions(t *testing.T) {
	raw := `{"Type":"Host-GW","DirectRouting":true}`
	c := mustParse(t, `{"Network":"10.244.0.0/16","Backend":`+raw+`}`)
	if c.BackendType != "host-gw" {
		t.Errorf("BackendType = %q, want host-gw (lower-cased)", c.BackendType)
	}
	if string(c.Backend) != raw {
		t.Errorf("Backend = %s, want the raw object %s", c.Backend, raw)
	}
	var opts struct{ DirectRouting bool }
	if err := json.Unmarshal(c.Backend, &opts); err != nil || !opts.DirectRouting {
		t.Errorf("backend options not decodable: %v %+v", err, opts)
	}
}

func TestParseVXLANOptions(t *testing.T) {
	c := mustParse(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4096,"Port":4789}}`)
	var o struct{ VNI, Port int }
	if err := json.Unmarshal(c.Backend, &o); err != nil || o.VNI != 4096 || o.Port != 4789 {
		t.Errorf("options = %+v, %v", o, err)
	}
}

func TestParseDualStack(t *testing.T) {
	c := mustParse(t, `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	if !c.EnableIPv4 || !c.EnableIPv6 {
		t.Fatalf("families: v4=%v v6=%v", c.EnableIPv4, c.EnableIPv6)
	}
	if c.SubnetLen != 24 || c.SubnetCount() != 255 {
		t.Errorf("v4: SubnetLen %d count %d", c.SubnetLen, c.SubnetCount())
	}
	if c.IPv6Network != pfx("fd00:10:244::/56") || c.IPv6SubnetLen != 64 {
		t.Errorf("v6: %v /%d", c.IPv6Network, c.IPv6SubnetLen)
	}
	if c.IPv6SubnetMin != addr("fd00:10:244:1::") || c.IPv6SubnetMax != addr("fd00:10:244:ff::") {
		t.Errorf("v6 range = %v..%v", c.IPv6SubnetMin, c.IPv6SubnetMax)
	}
	if n := c.IPv6SubnetCount(); n != 255 {
		t.Errorf("IPv6SubnetCount = %d, want 255", n)
	}
	if got := c.NthIPv6Subnet(0); got != pfx("fd00:10:244:1::/64") {
		t.Errorf("NthIPv6Subnet(0) = %v", got)
	}
	if got := c.NthIPv6Subnet(254); got != pfx("fd00:10:244:ff::/64") {
		t.Errorf("NthIPv6Subnet(254) = %v", got)
	}
	if got := c.NthIPv6Subnet(255); got.IsValid() {
		t.Errorf("NthIPv6Subnet(255) = %v, want none", got)
	}
}

func TestParseIPv6Only(t *testing.T) {
	c := mustParse(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	if c.EnableIPv4 || !c.EnableIPv6 {
		t.Fatalf("families: v4=%v v6=%v", c.EnableIPv4, c.EnableIPv6)
	}
	if c.Network.IsValid() || c.SubnetLen != 0 || c.SubnetMin.IsValid() || c.SubnetMax.IsValid() {
		t.Errorf("IPv4 fields set on an IPv6-only network: %v /%d %v %v", c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax)
	}
	if c.SubnetCount() != 0 || c.NthSubnet(0).IsValid() {
		t.Errorf("IPv4 subnets on an IPv6-only network")
	}
	if c.BackendType != "vxlan" || string(c.Backend) != `{"Type":"vxlan"}` {
		t.Errorf("backend = %q %s", c.BackendType, c.Backend)
	}
	if c.IPv6SubnetCount() != 255 {
		t.Errorf("IPv6SubnetCount = %d", c.IPv6SubnetCount())
	}
}

func TestParseIPv4FieldsIgnoredWhenDisabled(t *testing.T) {
	// Upstream reads the IPv4 fields only when EnableIPv4 is on.
	c := mustParse(t, `{"EnableIPv4":false,"EnableIPv6":true,"Network":"garbage","IPv6Network":"fd00:10:244::/56"}`)
	if c.Network.IsValid() {
		t.Errorf("Network = %v, want unset", c.Network)
	}
	c = mustParse(t, `{"Network":"10.244.0.0/16","IPv6Network":"garbage"}`)
	if c.EnableIPv6 || c.IPv6Network.IsValid() {
		t.Errorf("IPv6 enabled by IPv6Network alone: %v %v", c.EnableIPv6, c.IPv6Network)
	}
}

func TestParseDefaults(t *testing.T) {
	tests := []struct {
		name     string
		json     string
		len      int
		min, max string
		count    int
	}{
		{"/16 gives /24", `{"Network":"10.244.0.0/16"}`, 24, "10.244.1.0", "10.244.255.0", 255},
		{"/8 gives /24", `{"Network":"10.0.0.0/8"}`, 24, "10.0.1.0", "10.255.255.0", 65535},
		{"/21 gives /24", `{"Network":"10.244.0.0/21"}`, 24, "10.244.1.0", "10.244.7.0", 7},
		{"/22 gives /24", `{"Network":"10.244.0.0/22"}`, 24, "10.244.1.0", "10.244.3.0", 3},
		{"/23 gives /25", `{"Network":"10.244.0.0/23"}`, 25, "10.244.0.128", "10.244.1.128", 3},
		{"/28 gives /30", `{"Network":"10.244.0.0/28"}`, 30, "10.244.0.4", "10.244.0.12", 3},
		{"explicit SubnetLen", `{"Network":"10.244.0.0/16","SubnetLen":26}`, 26, "10.244.0.64", "10.244.255.192", 1023},
		{"SubnetLen network+1", `{"Network":"10.244.0.0/16","SubnetLen":17}`, 17, "10.244.128.0", "10.244.128.0", 1},
		{"SubnetLen 30", `{"Network":"10.244.0.0/16","SubnetLen":30}`, 30, "10.244.0.4", "10.244.255.252", 16383},
		{"explicit range", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.19.0"}`, 24, "10.244.10.0", "10.244.19.0", 10},
		{"only SubnetMin", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.250.0"}`, 24, "10.244.250.0", "10.244.255.0", 6},
		{"only SubnetMax", `{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.0"}`, 24, "10.244.1.0", "10.244.3.0", 3},
		{"SubnetMin first subnet", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.0.0","SubnetMax":"10.244.0.0"}`, 24, "10.244.0.0", "10.244.0.0", 1},
		{"explicit EnableIPv4", `{"EnableIPv4":true,"Network":"10.244.0.0/16"}`, 24, "10.244.1.0", "10.244.255.0", 255},
		{"EnableIPv4 null", `{"EnableIPv4":null,"Network":"10.244.0.0/16"}`, 24, "10.244.1.0", "10.244.255.0", 255},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.json)
			if !c.EnableIPv4 {
				t.Fatalf("EnableIPv4 = false")
			}
			if c.SubnetLen != tt.len {
				t.Errorf("SubnetLen = %d, want %d", c.SubnetLen, tt.len)
			}
			if c.SubnetMin != addr(tt.min) || c.SubnetMax != addr(tt.max) {
				t.Errorf("range = %v..%v, want %s..%s", c.SubnetMin, c.SubnetMax, tt.min, tt.max)
			}
			if got := c.SubnetCount(); got != tt.count {
				t.Errorf("SubnetCount = %d, want %d", got, tt.count)
			}
			if got, want := c.NthSubnet(0), netip.PrefixFrom(addr(tt.min), tt.len); got != want {
				t.Errorf("NthSubnet(0) = %v, want %v", got, want)
			}
			if got, want := c.NthSubnet(tt.count-1), netip.PrefixFrom(addr(tt.max), tt.len); got != want {
				t.Errorf("NthSubnet(count-1) = %v, want %v", got, want)
			}
			if got := c.NthSubnet(tt.count); got.IsValid() {
				t.Errorf("NthSubnet(count) = %v, want none", got)
			}
		})
	}
}

func TestParseIPv6Defaults(t *testing.T) {
	tests := []struct {
		name     string
		json     string
		len      int
		min, max string
		count    int
	}{
		{"/56 gives /64", `{"IPv6Network":"fd00:10:244::/56"}`, 64, "fd00:10:244:1::", "fd00:10:244:ff::", 255},
		{"/62 gives /64", `{"IPv6Network":"fd00:10:244::/62"}`, 64, "fd00:10:244:1::", "fd00:10:244:3::", 3},
		{"/63 gives /65", `{"IPv6Network":"fd00:10:244::/63"}`, 65, "fd00:10:244:0:8000::", "fd00:10:244:1:8000::", 3},
		{"/120 gives /122", `{"IPv6Network":"fd00:10:244::/120"}`, 122, "fd00:10:244::40", "fd00:10:244::c0", 3},
		{"/124 gives /126", `{"IPv6Network":"fd00:10:244::/124"}`, 126, "fd00:10:244::4", "fd00:10:244::c", 3},
		{"/48 huge range capped", `{"IPv6Network":"fd00:10::/48"}`, 64, "fd00:10:0:1::", "fd00:10:0:ffff::", 65535},
		{"/32 capped", `{"IPv6Network":"fd00::/32"}`, 64, "fd00:0:0:1::", "fd00:0:ffff:ffff::", MaxIPv6SubnetCount},
		{"/8 capped", `{"IPv6Network":"fd00::/8"}`, 64, "fd00:0:0:1::", "fdff:ffff:ffff:ffff::", MaxIPv6SubnetCount},
		{"explicit len", `{"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":60}`, 60, "fd00:10:244:10::", "fd00:10:244:f0::", 15},
		{"explicit range", `{"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:10::","IPv6SubnetMax":"fd00:10:244:1f::"}`, 64, "fd00:10:244:10::", "fd00:10:244:1f::", 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, `{"EnableIPv4":false,"EnableIPv6":true,`+tt.json[1:])
			if c.IPv6SubnetLen != tt.len {
				t.Errorf("IPv6SubnetLen = %d, want %d", c.IPv6SubnetLen, tt.len)
			}
			if c.IPv6SubnetMin != addr(tt.min) || c.IPv6SubnetMax != addr(tt.max) {
				t.Errorf("range = %v..%v, want %s..%s", c.IPv6SubnetMin, c.IPv6SubnetMax, tt.min, tt.max)
			}
			if got := c.IPv6SubnetCount(); got != tt.count {
				t.Errorf("IPv6SubnetCount = %d, want %d", got, tt.count)
			}
			if got, want := c.NthIPv6Subnet(0), netip.PrefixFrom(addr(tt.min), tt.len); got != want {
				t.Errorf("NthIPv6Subnet(0) = %v, want %v", got, want)
			}
			if tt.count < MaxIPv6SubnetCount {
				if got, want := c.NthIPv6Subnet(tt.count-1), netip.PrefixFrom(addr(tt.max), tt.len); got != want {
					t.Errorf("NthIPv6Subnet(count-1) = %v, want %v", got, want)
				}
				if got := c.NthIPv6Subnet(tt.count); got.IsValid() {
					t.Errorf("NthIPv6Subnet(count) = %v, want none", got)
				}
			} else if got := c.NthIPv6Subnet(tt.count); !got.IsValid() {
				// Past the cap the range still holds subnets.
				t.Errorf("NthIPv6Subnet(%d) invalid in a capped range", tt.count)
			}
		})
	}
}

func TestNthSubnetWalk(t *testing.T) {
	c := mustParse(t, `{"Network":"10.244.0.0/22"}`)
	want := []string{"10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"}
	for i, w := range want {
		if got := c.NthSubnet(i); got != pfx(w) {
			t.Errorf("NthSubnet(%d) = %v, want %s", i, got, w)
		}
	}
	for _, i := range []int{-1, 3, 1 << 40} {
		if got := c.NthSubnet(i); got.IsValid() {
			t.Errorf("NthSubnet(%d) = %v, want none", i, got)
		}
	}
	c = mustParse(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`)
	if got := c.NthIPv6Subnet(-1); got.IsValid() {
		t.Errorf("NthIPv6Subnet(-1) = %v", got)
	}
}

func TestParseBackend(t *testing.T) {
	tests := []struct {
		name, backend, wantType, wantRaw string
	}{
		{"absent", ``, "udp", `{"Type":"udp"}`},
		{"null", `,"Backend":null`, "udp", `{"Type":"udp"}`},
		{"no Type", `,"Backend":{"Port":8286}`, "udp", `{"Port":8286}`},
		{"empty Type", `,"Backend":{"Type":""}`, "udp", `{"Type":""}`},
		{"upper case", `,"Backend":{"Type":"VXLAN"}`, "vxlan", `{"Type":"VXLAN"}`},
		{"host-gw", `,"Backend":{"Type":"host-gw"}`, "host-gw", `{"Type":"host-gw"}`},
		{"wireguard", `,"Backend":{"Type":"WireGuard","PersistentKeepaliveInterval":25}`, "wireguard", `{"Type":"WireGuard","PersistentKeepaliveInterval":25}`},
		{"unknown type kept", `,"Backend":{"Type":"nonesuch"}`, "nonesuch", `{"Type":"nonesuch"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, `{"Network":"10.244.0.0/16"`+tt.backend+`}`)
			if c.BackendType != tt.wantType {
				t.Errorf("BackendType = %q, want %q", c.BackendType, tt.wantType)
			}
			if string(c.Backend) != tt.wantRaw {
				t.Errorf("Backend = %s, want %s", c.Backend, tt.wantRaw)
			}
			// The fallback is worth one warning that recommends vxlan; a
			// named backend is worth none.
			fellBack := tt.wantType == "udp"
			if fellBack != (len(c.Warnings) == 1) || len(c.Warnings) > 1 {
				t.Errorf("Warnings = %q, want one only when the backend fell back to udp", c.Warnings)
			}
			if fellBack && len(c.Warnings) == 1 && (!strings.Contains(c.Warnings[0], "udp") || !strings.Contains(c.Warnings[0], `"Type": "vxlan"`)) {
				t.Errorf("warning %q should say udp is used and recommend vxlan", c.Warnings[0])
			}
		})
	}
}

func TestParseMiscFields(t *testing.T) {
	c := mustParse(t, `{"Network":"10.244.0.0/16","EnableNFTables":true,"SomethingNew":{"a":1},"Backend":{"Type":"vxlan"}}`)
	if !c.EnableNFTables {
		t.Errorf("EnableNFTables = false")
	}
}

func TestParseRefusals(t *testing.T) {
	tests := []struct {
		name string
		json string
		want []string // substrings the error must contain
	}{
		{"malformed", `{"Network":`, []string{"error parsing subnet config: "}},
		{"empty", ``, []string{"error parsing subnet config: "}},
		{"not an object", `[1,2]`, []string{"error parsing subnet config: "}},
		{"SubnetLen wrong type", `{"Network":"10.244.0.0/16","SubnetLen":"24"}`, []string{"error parsing subnet config: ", "SubnetLen"}},
		{"EnableIPv6 wrong type", `{"Network":"10.244.0.0/16","EnableIPv6":"yes"}`, []string{"error parsing subnet config: ", "EnableIPv6"}},
		{"no family", `{"EnableIPv4":false,"Network":"10.244.0.0/16"}`, []string{"EnableIPv4", "EnableIPv6", "at least one"}},
		{"no Network", `{"Backend":{"Type":"vxlan"}}`, []string{"Network is required", "10.244.0.0/16"}},
		{"null document", `null`, []string{"Network is required"}},
		{"Network not CIDR", `{"Network":"10.244.0.0"}`, []string{"Network", `"10.244.0.0"`, "CIDR"}},
		{"Network garbage", `{"Network":"ten"}`, []string{"Network", "CIDR"}},
		{"Network is IPv6", `{"Network":"fd00:10:244::/56"}`, []string{"Network fd00:10:244::/56", "not an IPv4 network", "IPv6Network"}},
		{"SubnetLen equal", `{"Network":"10.244.0.0/16","SubnetLen":16}`, []string{"SubnetLen 16 must be longer than the network's prefix length 16 (Network 10.244.0.0/16)"}},
		{"SubnetLen shorter", `{"Network":"10.244.0.0/16","SubnetLen":8}`, []string{"SubnetLen 8 must be longer", "Network 10.244.0.0/16"}},
		{"SubnetLen 31", `{"Network":"10.244.0.0/16","SubnetLen":31}`, []string{"SubnetLen 31", "no usable host", "30"}},
		{"SubnetLen 32", `{"Network":"10.244.0.0/16","SubnetLen":32}`, []string{"SubnetLen 32", "no usable host"}},
		{"SubnetLen negative", `{"Network":"10.244.0.0/16","SubnetLen":-1}`, []string{"SubnetLen -1", "positive"}},
		{"/29 too small", `{"Network":"10.244.0.0/29"}`, []string{"Network 10.244.0.0/29", "too small", "SubnetLen /31"}},
		{"/32 too small", `{"Network":"10.244.0.1/32"}`, []string{"Network 10.244.0.1/32", "too small"}},
		{"SubnetMin outside", `{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}`, []string{"SubnetMin 10.245.0.0", "outside", "Network 10.244.0.0/16"}},
		{"SubnetMax outside", `{"Network":"10.244.0.0/16","SubnetMax":"10.0.0.0"}`, []string{"SubnetMax 10.0.0.0", "outside"}},
		{"SubnetMin unaligned", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.5"}`, []string{"SubnetMin 10.244.1.5", "not the start of a /24 subnet", "10.244.1.0"}},
		{"SubnetMax unaligned", `{"Network":"10.244.0.0/16","SubnetLen":25,"SubnetMax":"10.244.9.64"}`, []string{"SubnetMax 10.244.9.64", "/25", "10.244.9.0"}},
		{"SubnetMin garbage", `{"Network":"10.244.0.0/16","SubnetMin":"ten"}`, []string{"SubnetMin", `"ten"`, "not an IP address"}},
		{"SubnetMin IPv6", `{"Network":"10.244.0.0/16","SubnetMin":"fd00::"}`, []string{"SubnetMin fd00::", "not an address of Network"}},
		{"SubnetMin CIDR", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0/24"}`, []string{"SubnetMin", "not an IP address"}},
		{"range reversed", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.20.0","SubnetMax":"10.244.10.0"}`, []string{"SubnetMin 10.244.20.0", "SubnetMax 10.244.10.0", "no /24 subnets"}},
		{"SubnetMin after default max", `{"Network":"10.244.0.0/22","SubnetLen":23,"SubnetMin":"10.244.0.0","SubnetMax":"10.244.0.0"}`, nil},
		{"no IPv6Network", `{"EnableIPv6":true,"Network":"10.244.0.0/16"}`, []string{"IPv6Network is required", "EnableIPv6"}},
		{"IPv6Network is IPv4", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"10.244.0.0/16"}`, []string{"IPv6Network 10.244.0.0/16", "not an IPv6 network"}},
		{"IPv6Network mapped", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"::ffff:10.244.0.0/112"}`, []string{"IPv6Network", "not an IPv6 network"}},
		{"IPv6Network garbage", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::zz/56"}`, []string{"IPv6Network", "CIDR"}},
		{"IPv6SubnetLen equal", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":56}`, []string{"IPv6SubnetLen 56 must be longer than the network's prefix length 56 (IPv6Network fd00:10:244::/56)"}},
		{"IPv6SubnetLen 127", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":127}`, []string{"IPv6SubnetLen 127", "no usable host", "126"}},
		{"IPv6 /125 too small", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/125"}`, []string{"IPv6Network fd00:10:244::/125", "too small"}},
		{"IPv6SubnetMin outside", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:245::"}`, []string{"IPv6SubnetMin fd00:10:245::", "outside", "IPv6Network"}},
		{"IPv6SubnetMax unaligned", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMax":"fd00:10:244:5::1"}`, []string{"IPv6SubnetMax fd00:10:244:5::1", "not the start of a /64", "fd00:10:244:5::"}},
		{"IPv6SubnetMin IPv4", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"10.244.1.0"}`, []string{"IPv6SubnetMin 10.244.1.0", "not an address of IPv6Network"}},
		{"IPv6SubnetMin zone", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:1::%eth0"}`, []string{"IPv6SubnetMin", "not an address of IPv6Network"}},
		{"IPv6 range reversed", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:9::","IPv6SubnetMax":"fd00:10:244:8::"}`, []string{"IPv6SubnetMin fd00:10:244:9::", "IPv6SubnetMax fd00:10:244:8::", "no /64 subnets"}},
		{"dual stack bad v6", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":40}`, []string{"IPv6SubnetLen 40"}},
		{"Backend string", `{"Network":"10.244.0.0/16","Backend":"vxlan"}`, []string{"Backend: ", "JSON object", `"vxlan"`}},
		{"Backend array", `{"Network":"10.244.0.0/16","Backend":[{"Type":"vxlan"}]}`, []string{"Backend: ", "JSON object"}},
		{"Backend number", `{"Network":"10.244.0.0/16","Backend":1}`, []string{"Backend: "}},
		{"Backend Type number", `{"Network":"10.244.0.0/16","Backend":{"Type":1}}`, []string{"Backend: ", "Type must be a string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.json))
			if tt.want == nil {
				// A boundary case that must be accepted.
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted %s: %+v", tt.json, c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with its error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.HasPrefix(tt.want[0], "error parsing") && !strings.HasPrefix(err.Error(), "error parsing subnet config: ") {
				t.Errorf("error %q must start with the greppable phrase", err)
			}
		})
	}
}

// Host bits in a network are dropped with a warning, as upstream's
// net.ParseCIDR drops them (silently there).
func TestParseMasksHostBits(t *testing.T) {
	c := mustParse(t, `{"Network":"10.244.1.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244:1::/56","Backend":{"Type":"vxlan"}}`)
	if c.Network != pfx("10.244.0.0/16") || c.SubnetMin != addr("10.244.1.0") {
		t.Errorf("Network = %s (SubnetMin %s), want 10.244.0.0/16 (10.244.1.0)", c.Network, c.SubnetMin)
	}
	if c.IPv6Network != pfx("fd00:10:244::/56") {
		t.Errorf("IPv6Network = %s, want fd00:10:244::/56", c.IPv6Network)
	}
	want := []string{"Network 10.244.1.0/16 has host bits set: using 10.244.0.0/16", "IPv6Network fd00:10:244:1::/56 has host bits set: using fd00:10:244::/56"}
	if len(c.Warnings) != len(want) {
		t.Fatalf("Warnings = %q, want %d", c.Warnings, len(want))
	}
	for i, w := range want {
		if !strings.Contains(c.Warnings[i], w) {
			t.Errorf("warning %q does not contain %q", c.Warnings[i], w)
		}
	}
	if c := mustParse(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`); len(c.Warnings) != 0 {
		t.Errorf("a clean config warns: %q", c.Warnings)
	}
}

// Networks no node can route pod addresses in are refused, each with a
// message naming the parameter and a valid example.
func TestParseRefusesSpecialNetworks(t *testing.T) {
	v6 := func(n string) string {
		return `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"` + n + `","Backend":{"Type":"vxlan"}}`
	}
	v4 := func(n string) string { return `{"Network":"` + n + `","Backend":{"Type":"vxlan"}}` }
	for _, tt := range []struct {
		name, json, field, why, example string
	}{
		{"IPv4 default", v4("0.0.0.0/0"), "Network 0.0.0.0/0", "default route", "10.244.0.0/16"},
		{"IPv4 default with host bits", v4("10.0.0.0/0"), "Network 0.0.0.0/0", "default route", "10.244.0.0/16"},
		{"IPv4 loopback", v4("127.0.0.0/8"), "Network 127.0.0.0/8", "loopback range 127.0.0.0/8", "10.244.0.0/16"},
		{"IPv4 inside loopback", v4("127.10.0.0/16"), "Network 127.10.0.0/16", "loopback", "10.244.0.0/16"},
		{"IPv4 around loopback", v4("0.0.0.0/1"), "Network 0.0.0.0/1", "loopback", "10.244.0.0/16"},
		{"IPv4 multicast", v4("224.0.0.0/4"), "Network 224.0.0.0/4", "multicast range 224.0.0.0/4", "10.244.0.0/16"},
		{"IPv4 inside multicast", v4("239.1.0.0/16"), "Network 239.1.0.0/16", "multicast", "10.244.0.0/16"},
		{"IPv4 link-local", v4("169.254.0.0/16"), "Network 169.254.0.0/16", "link-local range 169.254.0.0/16", "10.244.0.0/16"},
		{"IPv6 default", v6("::/0"), "IPv6Network ::/0", "default route", "fd00:10:244::/56"},
		{"IPv6 loopback", v6("::/64"), "IPv6Network ::/64", "loopback range ::1/128", "fd00:10:244::/56"},
		{"IPv6 multicast", v6("ff05:10:244::/56"), "IPv6Network ff05:10:244::/56", "multicast range ff00::/8", "fd00:10:244::/56"},
		{"IPv6 link-local", v6("fe80::/56"), "IPv6Network fe80::/56", "link-local range fe80::/10", "fd00:10:244::/56"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil {
				t.Fatalf("Parse accepted %s", tt.json)
			}
			for _, w := range []string{tt.field, tt.why, tt.example} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Private ranges next to the special ones stay accepted.
	for _, ok := range []string{v4("10.0.0.0/8"), v4("100.64.0.0/10"), v4("192.168.0.0/16"), v6("fd00::/8"), v6("2001:db8::/32")} {
		mustParse(t, ok)
	}
}

func TestUnknownKeysWarnOncePerKey(t *testing.T) {
	c := mustParse(t, `{"Network":"10.244.0.0/16","subnetlen":25,"SubnetLength":26,"Bakend":{"Type":"vxlan"},"Backend":{"Type":"vxlan"}}`)
	if c.SubnetLen != 25 {
		t.Errorf("SubnetLen = %d: keys match case-insensitively, as encoding/json does", c.SubnetLen)
	}
	want := []string{`unknown key "Bakend" is ignored`, `unknown key "SubnetLength" is ignored`}
	if len(c.Warnings) != len(want) {
		t.Fatalf("Warnings = %q, want one per unknown key: %q", c.Warnings, want)
	}
	for i, w := range want {
		if !strings.Contains(c.Warnings[i], w) || !strings.Contains(c.Warnings[i], "known keys: Network, SubnetLen") {
			t.Errorf("warning %q: want %q and the list of known keys", c.Warnings[i], w)
		}
	}
}

func TestParseDatapath(t *testing.T) {
	for _, tc := range []struct {
		backend, want, err string
	}{
		{`{"Type":"vxlan"}`, "kernel", ""},
		{`{"Type":"vxlan","Datapath":"ebpf"}`, "ebpf", ""},
		{`{"Type":"host-gw","Datapath":"eBPF"}`, "ebpf", ""},
		{`{"Type":"host-gw","Datapath":"kernel"}`, "kernel", ""},
		{`{"Type":"udp","Datapath":"ebpf"}`, "", "host-gw and vxlan backends only, not udp"},
		{`{"Type":"vxlan","Datapath":"xdp"}`, "", `Datapath "xdp" is not known`},
		{`{"Type":"vxlan","Datapath":1}`, "", "Datapath must be a string"},
		{`{"Type":"vxlan","Datapath":"ebpf"},"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"`, "", "this network has no IPv4"},
	} {
		c, err := Parse([]byte(`{"Network":"10.244.0.0/16","Backend":` + tc.backend + `}`))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: err = %v, want one containing %q", tc.backend, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.backend, err)
		case tc.err == "" && c.Datapath != tc.want:
			t.Errorf("%s: Datapath = %q, want %q", tc.backend, c.Datapath, tc.want)
		}
	}
}
