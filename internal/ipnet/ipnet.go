// Package ipnet converts between the net.IPNet values netlink reads and
// writes and the net/netip prefixes the rest of flannel works with. One
// conversion for every package, so that a malformed kernel value is
// refused the same way everywhere.
package ipnet

import (
	"net"
	"net/netip"
)

// Prefix converts a netlink address or route destination, keeping the
// address's host bits (an interface address stays 10.244.1.1/24). ok is
// false for nil, for an address that is no IP, and for a mask whose
// length does not fit the address's family.
func Prefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	a = a.Unmap()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// FromPrefix converts p for netlink, keeping p's address (not masked).
func FromPrefix(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
