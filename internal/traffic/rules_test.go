package traffic

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestConfigFamilies(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		cfg     Config
		want    []family
		wantErr string
	}{
		{name: "nothing", cfg: Config{}, wantErr: "neither an IPv4 nor an IPv6"},
		{
			name: "ipv4, subnet given as a host address",
			cfg:  Config{Network: p("10.244.0.0/16"), Subnet: p("10.244.1.1/24")},
			want: []family{{network: p("10.244.0.0/16"), subnet: p("10.244.1.0/24")}},
		},
		{
			name: "dual stack",
			cfg: Config{Network: p("10.244.0.0/16"), Subnet: p("10.244.1.0/24"),
				IPv6Network: p("fd00:10:244::/56"), IPv6Subnet: p("fd00:10:244:1::/64")},
			want: []family{
				{network: p("10.244.0.0/16"), subnet: p("10.244.1.0/24")},
				{v6: true, network: p("fd00:10:244::/56"), subnet: p("fd00:10:244:1::/64")},
			},
		},
		{
			name: "ipv6 only",
			cfg:  Config{IPv6Network: p("fd00:10:244::/56"), IPv6Subnet: p("fd00:10:244:1::/64")},
			want: []family{{v6: true, network: p("fd00:10:244::/56"), subnet: p("fd00:10:244:1::/64")}},
		},
		{name: "subnet missing", cfg: Config{Network: p("10.244.0.0/16")}, wantErr: "both be set"},
		{name: "subnet outside", cfg: Config{Network: p("10.244.0.0/16"), Subnet: p("10.245.1.0/24")}, wantErr: "not inside"},
		{name: "subnet wider", cfg: Config{Network: p("10.244.0.0/16"), Subnet: p("10.0.0.0/8")}, wantErr: "not inside"},
		{name: "v6 in v4 slot", cfg: Config{Network: p("fd00::/56"), Subnet: p("fd00::/64")}, wantErr: "not an IPv4 prefix"},
		{name: "v4 in v6 slot", cfg: Config{IPv6Network: p("10.244.0.0/16"), IPv6Subnet: p("10.244.1.0/24")}, wantErr: "not an IPv6 prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.families()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("families() error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("families(): %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("families() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRulePlanRendering(t *testing.T) {
	v4 := family{network: netip.MustParsePrefix("10.244.0.0/16"), subnet: netip.MustParsePrefix("10.244.1.0/24")}
	v6 := family{v6: true, network: netip.MustParsePrefix("fd00:10:244::/56"), subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}

	var ipt []string
	for _, r := range masqueradeRules(v4) {
		ipt = append(ipt, strings.Join(r.iptablesArgs("c", true), " "))
	}
	wantIPT := []string{
		"-m mark --mark 0x4000/0x4000 -m comment --comment c -j RETURN",
		"-s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment c -j RETURN",
		"-s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment c -j RETURN",
		"! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment c -j RETURN",
		"-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment c -j MASQUERADE --random-fully",
		"! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment c -j MASQUERADE --random-fully",
	}
	if !slices.Equal(ipt, wantIPT) {
		t.Errorf("iptables IPv4 masquerade plan:\n%s\nwant:\n%s", strings.Join(ipt, "\n"), strings.Join(wantIPT, "\n"))
	}

	var nft []string
	for _, r := range nftMasqueradeRules(v6) {
		nft = append(nft, r.nftRule("ip6", false))
	}
	wantNFT := []string{
		"meta mark 0x00004000 return",
		"ip6 saddr fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return",
		"ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return",
		"ip6 saddr != fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return",
		"ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade",
		"ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade",
	}
	if !slices.Equal(nft, wantNFT) {
		t.Errorf("nftables IPv6 masquerade plan:\n%s\nwant:\n%s", strings.Join(nft, "\n"), strings.Join(wantNFT, "\n"))
	}

	var fwd []string
	for _, r := range forwardRules(v4) {
		fwd = append(fwd, r.nftRule("ip", true))
	}
	wantFwd := []string{"ip saddr 10.244.0.0/16 accept", "ip daddr 10.244.0.0/16 accept"}
	if !slices.Equal(fwd, wantFwd) {
		t.Errorf("nftables forward plan = %q, want %q", fwd, wantFwd)
	}
}
