package leaseset

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
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
	out, _, err := n.read()
	return out, err
}

// read lists the prefixes and says which link indices are flannel's.
func (n NetlinkHost) read() ([]HostPrefix, map[int]bool, error) {
	h := n.Handle
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return nil, nil, fmt.Errorf("open netlink: %w", err)
		}
		defer h.Close()
	}
	links, err := nldump.List(func() ([]netlink.Link, error) { return h.LinkList() })
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	names, flannel := map[int]string{}, map[int]bool{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		if flannelOwned(l.Attrs().Name) {
			flannel[l.Attrs().Index] = true
		}
	}
	out, err := addrPrefixes(h, names)
	if err != nil {
		return nil, nil, err
	}
	// Visited as the dump arrives rather than listed: with thousands of
	// peers the table holds thousands of flannel routes, read per batch.
	mark := len(out)
	err = nldump.Visit(func() { out = out[:mark] }, func() error {
		return h.RouteListFilteredIter(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
			p, ok := ipnet.Prefix(r.Dst)
			p = p.Masked()
			name := names[r.LinkIndex]
			if !ok || flannelOwned(name) {
				return true
			}
			hp := HostPrefix{Prefix: p, Route: true, Connected: r.Protocol == unix.RTPROT_KERNEL, What: "route " + p.String() + " dev " + name}
			if r.Type == unix.RTN_BLACKHOLE {
				hp.What = "blackhole route " + p.String()
			} else if gw, ok := netip.AddrFromSlice(r.Gw); ok {
				hp.What = "route " + p.String() + " via " + gw.Unmap().String() + " dev " + name
			}
			out = append(out, hp)
			return true
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list routes: %w", err)
	}
	return out, flannel, nil
}

func addrPrefixes(h *netlink.Handle, names map[int]string) ([]HostPrefix, error) {
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
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

// flannelOwned reports whether a link is one of the devices flannel's
// backends create; their addresses and routes follow the leases.
func flannelOwned(name string) bool { return strings.HasPrefix(name, "flannel") }
