package backend

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ConfigureTunnel gives a point-to-point overlay device (udp's flannel0,
// wireguard's flannel-wg) the node's address as a host prefix, brings it
// up and routes the whole cluster network through it, as upstream does:
// the host prefix creates no subnet or broadcast routes, and the pods'
// bridge route for the node's own subnet is more specific than the network
// route, so only traffic for other nodes enters the tunnel. The address is
// the source of traffic the node itself sends into the overlay.
func ConfigureTunnel(h *netlink.Handle, name string, own netip.Addr, network netip.Prefix) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find device %s: %w", name, err)
	}
	host := netip.PrefixFrom(own, own.BitLen())
	addr := &netlink.Addr{IPNet: IPNet(host)}
	if own.Is6() {
		addr.Flags = unix.IFA_F_NODAD // a tunnel has no neighbours to collide with
	}
	if err := h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("ip addr replace %s dev %s: %w", host, name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("ip link set %s up: %w", name, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: IPNet(network.Masked()), Scope: netlink.SCOPE_LINK}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("ip route replace %s dev %s: %w", network.Masked(), name, err)
	}
	return nil
}
