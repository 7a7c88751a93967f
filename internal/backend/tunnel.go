package backend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
)

// ConfigureTunnel gives a point-to-point overlay device (udp's flannel0,
// wireguard's flannel-wg) the node's address as a host prefix, brings it
// up and routes the whole cluster network through it, as upstream does:
// the host prefix creates no subnet or broadcast routes, and the pods'
// bridge route for the node's own subnet is more specific than the network
// route, so only traffic for other nodes enters the tunnel. The address is
// the source of traffic the node itself sends into the overlay.
func ConfigureTunnel(h *netlink.Handle, name string, own netip.Addr, network netip.Prefix) error {
	_, err := RepairTunnel(h, name, own, network, Repairs{}, nil)
	return err
}

// RepairTunnel makes the device what ConfigureTunnel makes it, writing
// only what is missing and counting it in r, and returns the device's
// index. These devices live with the process that opened them: one that is
// gone is made again by recreate, the backend's, which knows how; with a
// nil recreate that is an error.
func RepairTunnel(h *netlink.Handle, name string, own netip.Addr, network netip.Prefix, r Repairs, recreate func() error) (int, error) {
	link, err := h.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) && recreate != nil {
		if err := recreate(); err != nil {
			return 0, fmt.Errorf("re-create deleted device %s: %w", name, err)
		}
		r.Add("device")
		link, err = h.LinkByName(name)
	}
	if err != nil {
		return 0, fmt.Errorf("find device %s: %w (restart flanneld to create it again)", name, err)
	}
	if err := tunnelAddress(h, link, own, r); err != nil {
		return 0, err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return 0, fmt.Errorf("ip link set %s up: %w", name, err)
		}
		r.Add("device")
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipnet.FromPrefix(network.Masked()), Scope: netlink.SCOPE_LINK}
	have, err := nldump.List(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(familyOf(own), route, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	})
	if err != nil {
		return 0, fmt.Errorf("ip route show %s dev %s: %w", network.Masked(), name, err)
	}
	if len(have) == 0 {
		if err := h.RouteReplace(route); err != nil {
			return 0, fmt.Errorf("ip route replace %s dev %s: %w", network.Masked(), name, err)
		}
		r.Add("route")
	}
	return link.Attrs().Index, nil
}

// tunnelAddress gives link the host prefix of own unless it has it.
func tunnelAddress(h *netlink.Handle, link netlink.Link, own netip.Addr, r Repairs) error {
	host := netip.PrefixFrom(own, own.BitLen())
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return h.AddrList(link, familyOf(own)) })
	if err != nil {
		return fmt.Errorf("ip addr show dev %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if p, ok := ipnet.Prefix(a.IPNet); ok && p == host {
			return nil
		}
	}
	addr := &netlink.Addr{IPNet: ipnet.FromPrefix(host)}
	if own.Is6() {
		addr.Flags = unix.IFA_F_NODAD // a tunnel has no neighbours to collide with
	}
	if err := h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("ip addr replace %s dev %s: %w", host, link.Attrs().Name, err)
	}
	r.Add("address")
	return nil
}

func familyOf(a netip.Addr) int {
	if a.Is6() {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// TunnelRoutesInLine says, for the healer, whether a route notification
// leaves the networks routed through the tunnel device dev: a network's
// route through dev deleted (by hand, or with the device going down), or
// one through another device added, is drift; every other route inside
// the networks (the pods' bridge route) is none of the tunnel's business.
func TunnelRoutesInLine(dev int, networks ...netip.Prefix) func(netlink.RouteUpdate) bool {
	return func(u netlink.RouteUpdate) bool {
		dst, ok := ipnet.Prefix(u.Dst)
		if !ok || u.Table != unix.RT_TABLE_MAIN {
			return true
		}
		for _, n := range networks {
			if dst == n.Masked() {
				return (u.LinkIndex == dev) == (u.Type != unix.RTM_DELROUTE)
			}
		}
		return true
	}
}
