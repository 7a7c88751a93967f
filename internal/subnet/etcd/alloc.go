package etcd

import (
	"fmt"
	"net/netip"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/subnet"
)

// taken holds the subnets existing leases use, per family: a dual-stack key
// takes its IPv4 and its IPv6 half independently.
type taken struct {
	v4, v6 map[netip.Prefix]bool
}

func takenBy(recs []record) taken {
	t := taken{v4: map[netip.Prefix]bool{}, v6: map[netip.Prefix]bool{}}
	for _, r := range recs {
		if r.l.Subnet.IsValid() {
			t.v4[r.l.Subnet] = true
		}
		if r.l.IPv6Subnet.IsValid() {
			t.v6[r.l.IPv6Subnet] = true
		}
	}
	return t
}

// probes is how many random picks we try before scanning: enough to find a
// free subnet at once in any network that is not nearly full.
const probes = 32

// pickFree picks a random free subnet of each enabled family. Random rather
// than lowest-first, so nodes starting together rarely want the same one.
// intn(n) returns a number in [0, n).
func pickFree(cfg *config.Config, t taken, intn func(int) int) (v4, v6 netip.Prefix, err error) {
	if cfg.EnableIPv4 {
		n := cfg.SubnetCount()
		var ok bool
		if v4, ok = pickOne(n, cfg.NthSubnet, t.v4, intn); !ok {
			return v4, v6, noFree(cfg.Network, cfg.SubnetLen, n, cfg.SubnetMin, cfg.SubnetMax)
		}
	}
	if cfg.EnableIPv6 {
		n := cfg.IPv6SubnetCount()
		var ok bool
		if v6, ok = pickOne(n, cfg.NthIPv6Subnet, t.v6, intn); !ok {
			return v4, v6, noFree(cfg.IPv6Network, cfg.IPv6SubnetLen, n, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax)
		}
	}
	return v4, v6, nil
}

// pickOne probes at random, then scans from a random start. The scan ends
// within len(used)+1 steps, however large n is, since that many distinct
// subnets cannot all be used.
func pickOne(n int, nth func(int) netip.Prefix, used map[netip.Prefix]bool, intn func(int) int) (netip.Prefix, bool) {
	if n <= 0 {
		return netip.Prefix{}, false
	}
	for range probes {
		if p := nth(intn(n)); !used[p] {
			return p, true
		}
	}
	start := intn(n)
	for i := 0; i < n && i <= len(used); i++ {
		if p := nth((start + i) % n); !used[p] {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func noFree(network netip.Prefix, bits, n int, lo, hi netip.Addr) error {
	return fmt.Errorf("%w in network %s (SubnetLen /%d, %d subnets between SubnetMin %s and SubnetMax %s, all leased): make the network larger or remove stale leases",
		subnet.ErrNoFreeSubnet, network, bits, n, lo, hi)
}
