package backend

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
)

// CheckOnSegment returns nil when addr can be reached from the link with
// index linkIndex without a router in between: a prefix configured on the
// link covers addr, and the kernel's own lookup for addr leaves through that
// link without a gateway. Routing a pod subnet "via addr" is only safe then;
// otherwise the kernel either refuses the route or sends the traffic to a
// router that knows nothing about pod subnets. The error says which test
// failed, for the operator.
func CheckOnSegment(h *netlink.Handle, linkIndex int, addr netip.Addr) error {
	addr = addr.Unmap()
	link, err := h.LinkByIndex(linkIndex)
	if err != nil {
		return fmt.Errorf("look up interface %d: %w", linkIndex, err)
	}
	name := link.Attrs().Name
	routes, err := h.RouteGet(net.IP(addr.AsSlice()))
	if err != nil {
		return fmt.Errorf("the kernel has no route to %s: %w", addr, err)
	}
	if len(routes) == 0 {
		return fmt.Errorf("the kernel has no route to %s", addr)
	}
	r := routes[0]
	if r.Gw != nil {
		return fmt.Errorf("the kernel reaches %s through gateway %s", addr, r.Gw)
	}
	if r.LinkIndex != linkIndex {
		return fmt.Errorf("the kernel reaches %s through %s, not %s", addr, linkName(h, r.LinkIndex), name)
	}
	return checkCovered(h, link, addr)
}

// checkCovered is the connected-prefix half of CheckOnSegment. Host
// prefixes (/32, /128) cover only the node itself and do not count.
func checkCovered(h *netlink.Handle, link netlink.Link, addr netip.Addr) error {
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return h.AddrList(link, familyOf(addr)) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	var have []string
	for _, a := range addrs {
		p, ok := ipnet.Prefix(a.IPNet)
		if !ok {
			continue
		}
		have = append(have, p.String())
		if p.Bits() < addr.BitLen() && p.Masked().Contains(addr) {
			return nil
		}
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return fmt.Errorf("%s is outside every prefix configured on %s (%s)", addr, link.Attrs().Name, strings.Join(have, ", "))
}

func linkName(h *netlink.Handle, index int) string {
	l, err := h.LinkByIndex(index)
	if err != nil {
		return fmt.Sprintf("interface %d", index)
	}
	return l.Attrs().Name
}
