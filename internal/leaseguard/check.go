package leaseguard

import (
	"fmt"
	"net/netip"

	"github.com/flannelgo/flannel/internal/lease"
)

// family is one address family's view of a lease.
type family struct {
	name     string
	network  netip.Prefix
	subnet   netip.Prefix
	publicIP netip.Addr
	ownIP    netip.Addr
	ownNet   netip.Prefix
	v6       bool
}

func (g *Guard) families(l *lease.Lease) []family {
	var fs []family
	if g.v4.IsValid() {
		fs = append(fs, family{"IPv4", g.v4, l.Subnet, l.Attrs.PublicIP, g.own.Attrs.PublicIP, g.own.Subnet, false})
	}
	if g.v6.IsValid() {
		fs = append(fs, family{"IPv6", g.v6, l.IPv6Subnet, l.Attrs.PublicIPv6, g.own.Attrs.PublicIPv6, g.own.IPv6Subnet, true})
	}
	return fs
}

// check returns why l must not be programmed, if it must not.
func (g *Guard) check(l *lease.Lease, host []HostPrefix) (Rejection, bool) {
	key := l.Key()
	for _, f := range g.families(l) {
		if why, reason := g.checkSubnet(key, f, host); reason != "" {
			return Rejection{Key: key, Reason: reason, Why: why}, true
		}
		if why, reason := checkPublicIP(f); reason != "" {
			return Rejection{Key: key, Reason: reason, Why: why}, true
		}
	}
	return Rejection{}, false
}

func (g *Guard) checkSubnet(key string, f family, host []HostPrefix) (string, string) {
	s := f.subnet
	switch {
	case !s.IsValid():
		return fmt.Sprintf("it has no %s subnet although the network %s enables %s", f.name, f.network, f.name), MissingSubnet
	case s.Bits() < f.network.Bits() || !f.network.Contains(s.Addr()):
		return fmt.Sprintf("subnet %s is outside the network %s; routing it would take over addresses flannel does not own", s, f.network), OutsideNetwork
	case f.ownNet.IsValid() && s.Overlaps(f.ownNet):
		return fmt.Sprintf("subnet %s overlaps this node's own subnet %s", s, f.ownNet), OverlapsOwn
	}
	for k, other := range g.accepted {
		o := other.Subnet
		if f.v6 {
			o = other.IPv6Subnet
		}
		if k != key && o.IsValid() && s.Overlaps(o) {
			return fmt.Sprintf("subnet %s overlaps subnet %s of lease %s, programmed already", s, o, k), OverlapsLease
		}
	}
	for _, h := range host {
		// A route for exactly this subnet that the kernel did not make for
		// an address is what a backend installs for the lease (host-gw,
		// DirectRouting, ipsec0, from this run or an earlier one) and would
		// replace anyway; addresses and connected routes are never excused.
		mine := h.Prefix == s && h.Route && !h.Connected
		if !mine && s.Overlaps(h.Prefix) {
			return fmt.Sprintf("subnet %s overlaps %s on this node, which flanneld does not own; a flannel route would shadow it", s, h.What), OverlapsHost
		}
	}
	return "", ""
}

func checkPublicIP(f family) (string, string) {
	ip := f.publicIP.Unmap()
	field := "PublicIP"
	if f.v6 {
		field = "PublicIPv6"
	}
	bad := ""
	switch {
	case !ip.IsValid() || ip.IsUnspecified():
		bad = "unset or unspecified"
	case ip.Is6() != f.v6:
		bad = "of the wrong address family"
	case ip.IsLoopback():
		bad = "a loopback address"
	case ip.IsMulticast():
		bad = "a multicast address"
	case ip.IsLinkLocalUnicast():
		bad = "a link-local address"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		bad = "the broadcast address"
	}
	if bad != "" {
		return fmt.Sprintf("%s %s is %s; no node can be reached there", field, showAddr(f.publicIP, f.v6), bad), BadPublicIP
	}
	if f.ownIP.IsValid() && ip == f.ownIP.Unmap() {
		return fmt.Sprintf("%s %s is this node's own address, but this node holds %s: packets for it would loop back here", field, ip, f.ownNet), OwnPublicIP
	}
	return "", ""
}

// showAddr prints an address for a log line; an unset one as the
// unspecified address it is stored as.
func showAddr(a netip.Addr, v6 bool) string {
	switch {
	case a.IsValid():
		return a.String()
	case v6:
		return "::"
	default:
		return "0.0.0.0"
	}
}
