package leaseset

import (
	"fmt"
	"net/netip"

	"k8s.io/klog/v2"

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

func (s *Set) families(l *lease.Lease) []family {
	var fs []family
	if s.v4.IsValid() {
		fs = append(fs, family{"IPv4", s.v4, l.Subnet, l.Attrs.PublicIP, s.own.Attrs.PublicIP, s.own.Subnet, false})
	}
	if s.v6.IsValid() {
		fs = append(fs, family{"IPv6", s.v6, l.IPv6Subnet, l.Attrs.PublicIPv6, s.own.Attrs.PublicIPv6, s.own.IPv6Subnet, true})
	}
	return fs
}

// check returns why l must not be programmed, if it must not.
func (s *Set) check(l *lease.Lease, host []HostPrefix) (Rejection, bool) {
	key := l.Key()
	for _, f := range s.families(l) {
		if why, reason := s.checkSubnet(key, f, host); reason != "" {
			return Rejection{Key: key, Reason: reason, Why: why}, true
		}
		if why, reason := checkPublicIP(f); reason != "" {
			return Rejection{Key: key, Reason: reason, Why: why}, true
		}
	}
	return Rejection{}, false
}

func (s *Set) checkSubnet(key string, f family, host []HostPrefix) (string, string) {
	p := f.subnet
	switch {
	case !p.IsValid():
		return fmt.Sprintf("it has no %s subnet although the network %s enables %s", f.name, f.network, f.name), MissingSubnet
	case p.Bits() < f.network.Bits() || !f.network.Contains(p.Addr()):
		return fmt.Sprintf("subnet %s is outside the network %s; routing it would take over addresses flannel does not own", p, f.network), OutsideNetwork
	case f.ownNet.IsValid() && p.Overlaps(f.ownNet):
		return fmt.Sprintf("subnet %s overlaps this node's own subnet %s", p, f.ownNet), OverlapsOwn
	}
	if k, o, ok := s.overlapping(key, p); ok {
		return fmt.Sprintf("subnet %s overlaps subnet %s of lease %s, programmed already", p, o, k), OverlapsLease
	}
	for _, h := range host {
		// A route for exactly this subnet that the kernel did not make for
		// an address is what a backend installs for the lease (host-gw,
		// DirectRouting, ipsec0, from this run or an earlier one) and would
		// replace anyway; addresses and connected routes are never excused.
		mine := h.Prefix == p && h.Route && !h.Connected
		if !mine && p.Overlaps(h.Prefix) {
			return fmt.Sprintf("subnet %s overlaps %s on this node, which flanneld does not own; a flannel route would shadow it", p, h.What), OverlapsHost
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

// noteTwin logs, once per lease, another node that advertises this node's
// public address: the VXLAN FDB (or host-gw route) for one of the two
// subnets then leads to the wrong machine. e.twin remembers the report.
func (s *Set) noteTwin(key string, l *lease.Lease, e *entry) {
	a, b := l.Attrs, s.own.Attrs
	same := (b.PublicIP.IsValid() && !b.PublicIP.IsUnspecified() && a.PublicIP == b.PublicIP) ||
		(b.PublicIPv6.IsValid() && a.PublicIPv6 == b.PublicIPv6)
	if !same || e.twin {
		return
	}
	e.twin = true
	klog.Errorf("duplicate public address: lease %s (another node) advertises the same address as this node's lease %s (%s): "+
		"one of them will not receive its traffic; give each node its own address with --iface, --iface-regex, --iface-can-reach or --public-ip",
		key, s.own.Key(), b.PublicIP)
}
