package config

import (
	"math"
	"math/big"
	"net/netip"
)

// MaxIPv6SubnetCount caps IPv6SubnetCount: an IPv6 network easily holds more
// subnets than any allocator would ever walk, and than an int can count.
const MaxIPv6SubnetCount = 1 << 20

// SubnetCount is the number of IPv4 subnets from SubnetMin to SubnetMax
// inclusive (0 when IPv4 is disabled).
func (c *Config) SubnetCount() int {
	if !c.EnableIPv4 {
		return 0
	}
	return countSubnets(c.SubnetMin, c.SubnetMax, c.SubnetLen, math.MaxInt)
}

// NthSubnet returns the i-th IPv4 subnet of the allocation range, counting
// SubnetMin as 0. It returns the zero Prefix when i is outside the range or
// IPv4 is disabled.
func (c *Config) NthSubnet(i int) netip.Prefix {
	if !c.EnableIPv4 {
		return netip.Prefix{}
	}
	return nthInRange(c.SubnetMin, c.SubnetMax, c.SubnetLen, i)
}

// IPv6SubnetCount is the number of IPv6 subnets from IPv6SubnetMin to
// IPv6SubnetMax inclusive, capped at MaxIPv6SubnetCount (0 when IPv6 is
// disabled).
func (c *Config) IPv6SubnetCount() int {
	if !c.EnableIPv6 {
		return 0
	}
	return countSubnets(c.IPv6SubnetMin, c.IPv6SubnetMax, c.IPv6SubnetLen, MaxIPv6SubnetCount)
}

// NthIPv6Subnet returns the i-th IPv6 subnet of the allocation range,
// counting IPv6SubnetMin as 0. Indexes past MaxIPv6SubnetCount still work as
// long as the subnet is not after IPv6SubnetMax. It returns the zero Prefix
// when i is outside the range or IPv6 is disabled.
func (c *Config) NthIPv6Subnet(i int) netip.Prefix {
	if !c.EnableIPv6 {
		return netip.Prefix{}
	}
	return nthInRange(c.IPv6SubnetMin, c.IPv6SubnetMax, c.IPv6SubnetLen, i)
}

func nthInRange(min, max netip.Addr, bits, i int) netip.Prefix {
	if i < 0 || !min.IsValid() {
		return netip.Prefix{}
	}
	a := nthSubnetAddr(min, i, bits)
	if !a.IsValid() || a.Compare(max) > 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits)
}

func countSubnets(min, max netip.Addr, bits, limit int) int {
	if !min.IsValid() || !max.IsValid() || min.Compare(max) > 0 {
		return 0
	}
	d := new(big.Int).Sub(toInt(max), toInt(min))
	d.Rsh(d, uint(min.BitLen()-bits))
	if !d.IsInt64() || d.Int64() >= int64(limit) {
		return limit
	}
	return int(d.Int64()) + 1
}

// nthSubnetAddr is a + n subnets of length bits; the zero Addr if that
// leaves the address space.
func nthSubnetAddr(a netip.Addr, n, bits int) netip.Addr {
	x := new(big.Int).Lsh(big.NewInt(int64(n)), uint(a.BitLen()-bits))
	x.Add(x, toInt(a))
	if x.BitLen() > a.BitLen() {
		return netip.Addr{}
	}
	b := x.FillBytes(make([]byte, a.BitLen()/8))
	r, _ := netip.AddrFromSlice(b)
	return r
}

func toInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

// alignDown is the start of the /bits subnet holding a.
func alignDown(a netip.Addr, bits int) netip.Addr {
	p, _ := a.Prefix(bits)
	return p.Addr()
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for k := p.Bits(); k < len(b)*8; k++ {
		b[k/8] |= 0x80 >> (k % 8)
	}
	r, _ := netip.AddrFromSlice(b)
	return r
}
