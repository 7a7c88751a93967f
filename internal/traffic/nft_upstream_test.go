package traffic

import "testing"

// nftUpstreamV4 is what upstream's nftables mode (pkg/trafficmngr/nftables,
// v0.28) sends to nft on a node with fullConfig(): each table added with
// its comment; the postrtg chain added, flushed and filled; then the
// forward chain the same way.
const nftUpstreamV4 = `add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }
add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }
add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }
flush chain ip flannel-ipv4 postrtg
add rule ip flannel-ipv4 postrtg meta mark 0x4000 return
add rule ip flannel-ipv4 postrtg ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return
add rule ip flannel-ipv4 postrtg ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return
add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
add rule ip flannel-ipv4 postrtg ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }
flush chain ip flannel-ipv4 forward
add rule ip flannel-ipv4 forward ip saddr 10.244.0.0/16 accept
add rule ip flannel-ipv4 forward ip daddr 10.244.0.0/16 accept
`

// Our nftables mode lists exactly as upstream's, and takes over a node
// that upstream's flanneld set up without rewriting anything: both
// implementations hold the same table.
func TestNFTablesAsUpstream(t *testing.T) {
	requireRoot(t)
	guardRootNamespace(t)
	ours := newNS(t, "ttr-nftours")
	applyIn(t, ours, newManagerIn(t, ours, nftablesImpl, fullConfig()))

	theirs := newNS(t, "ttr-nftup")
	theirs.sh(t, "nft -f - <<'EOF'\n"+nftUpstreamV4+"EOF")
	const list = "nft list table ip flannel-ipv4; nft list table ip6 flannel-ipv6"
	if got, want := ours.sh(t, list), theirs.sh(t, list); got != want {
		t.Fatalf("our tables list as\n%s\nupstream's as\n%s", got, want)
	}
	if got := ours.sh(t, list); got != wantNFTablesV4+wantNFTablesEmptyV6 {
		t.Errorf("tables:\n%s\nwant:\n%s", got, wantNFTablesV4+wantNFTablesEmptyV6)
	}

	before := theirs.sh(t, "nft -a list ruleset")
	m := newManagerIn(t, theirs, nftablesImpl, fullConfig())
	if applyIn(t, theirs, m) {
		t.Error("the first Apply on upstream's tables reported a repair")
	}
	if after := theirs.sh(t, "nft -a list ruleset"); after != before {
		t.Errorf("upstream's correct tables were rewritten\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// Upstream's nftables mode does not masquerade traffic from outside the
// pod network to any pod (its fourth rule: saddr != <subnet> daddr
// <network> return); its iptables mode masquerades it when the pod is on
// another node. Each of our modes does as upstream's does.
func TestOutsideToRemotePod(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			requireRoot(t)
			guardRootNamespace(t)
			tn := newTrafficNet(t)
			route(t, tn.out, "10.244.0.0/16", "198.51.100.11", "eth0")
			route(t, tn.out, "fd00:10:244::/56", "fd00:198:51:100::11", "eth0")
			applyIn(t, tn.node, newManagerIn(t, tn.node, im, dualConfig()))
			for _, p := range []struct{ dst, outside, node string }{
				{"10.244.2.2", "198.51.100.254", "10.244.1.0"},
				{"fd00:10:244:2::2", "fd00:198:51:100::254", "fd00:10:244:1::"},
			} {
				want := p.node // masqueraded to the address of the device towards the peer
				if im.name == "nftables" {
					want = p.outside
				}
				if got := sourceSeenBy(t, tn.out, tn.peer, p.dst); got.String() != want {
					t.Errorf("outside -> pod %s on another node arrived from %s, want %s", p.dst, got, want)
				}
			}
		})
	}
}
