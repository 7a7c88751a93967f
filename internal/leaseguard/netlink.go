package leaseguard

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetlinkHost reads the node's addresses and main-table routes with
// netlink, leaving out those on flannel's own devices (flannel.1,
// flannel-v6.1, flannel0, flannel-wg, ...): what a backend programs for
// accepted leases is not "the host's" state.
type NetlinkHost struct {
	Handle *netlink.Handle // nil: the current network namespace
}

// Prefixes lists addresses (as host prefixes) and routes with a
// destination.
func (n NetlinkHost) Prefixes() ([]HostPrefix, error) {
	h := n.Handle
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		defer h.Close()
	}
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out, err := addrPrefixes(h, names)
	if err != nil {
		return nil, err
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		p, ok := prefixOf(r.Dst)
		name := names[r.LinkIndex]
		if !ok || flannelOwned(name) {
			continue
		}
		hp := HostPrefix{Prefix: p, Route: true, Connected: r.Protocol == unix.RTPROT_KERNEL, What: "route " + p.String() + " dev " + name}
		if r.Type == unix.RTN_BLACKHOLE {
			hp.What = "blackhole route " + p.String()
		} else if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			hp.What = "route " + p.String() + " via " + gw.Unmap().String() + " dev " + name
		}
		out = append(out, hp)
	}
	return out, nil
}

func addrPrefixes(h *netlink.Handle, names map[int]string) ([]HostPrefix, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []HostPrefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		name := names[a.LinkIndex]
		if !ok || flannelOwned(name) {
			continue
		}
		ip = ip.Unmap()
		out = append(out, HostPrefix{Prefix: netip.PrefixFrom(ip, ip.BitLen()), What: "address " + a.IPNet.String() + " on " + name})
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), bits).Masked(), true
}

// flannelOwned reports whether a link is one of the devices flannel's
// backends create; their addresses and routes follow the leases.
func flannelOwned(name string) bool { return strings.HasPrefix(name, "flannel") }
