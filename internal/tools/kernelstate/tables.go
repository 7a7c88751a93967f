package kernelstate

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
)

// Route is one routing-table entry.
type Route struct {
	Dst       netip.Prefix // invalid for a default route
	Gw        netip.Addr   // invalid for a connected route
	Dev       string
	LinkIndex int
	OnLink    bool
}

// String renders the route in `ip route` syntax.
func (r Route) String() string {
	s := "default"
	if r.Dst.IsValid() {
		s = r.Dst.String()
	}
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += " dev " + r.Dev
	if r.OnLink {
		s += " onlink"
	}
	return s
}

// Neighbour is one neighbour (ARP / NDP) entry.
type Neighbour struct {
	IP    netip.Addr
	MAC   net.HardwareAddr
	State int // netlink.NUD_*
	Dev   string
}

// Permanent reports whether the entry was programmed (not learned).
func (n Neighbour) Permanent() bool { return n.State&netlink.NUD_PERMANENT != 0 }

// Resolved reports whether the entry holds a usable MAC.
func (n Neighbour) Resolved() bool {
	return len(n.MAC) > 0 && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0
}

func (n Neighbour) String() string {
	return fmt.Sprintf("%s lladdr %s %s", n.IP, n.MAC, StateString(n.State))
}

// FDBEntry is one bridge forwarding entry of a VXLAN device: frames for MAC
// are sent to Dst.
type FDBEntry struct {
	MAC       net.HardwareAddr
	Dst       netip.Addr
	Permanent bool
	Dev       string
}

func (f FDBEntry) String() string {
	s := fmt.Sprintf("%s dst %s dev %s", f.MAC, f.Dst, f.Dev)
	if f.Permanent {
		s += " permanent"
	}
	return s
}

// StateString names the NUD_* bits as `ip neigh` does.
func StateString(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_PERMANENT, "PERMANENT"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_NOARP, "NOARP"},
	}
	var out []string
	for _, n := range names {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "NONE"
	}
	return strings.Join(out, ",")
}

func (r *Reader) linkName(idx int) string {
	if l, err := r.h.LinkByIndex(idx); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("if%d", idx)
}

func (r *Reader) route(nr netlink.Route) Route {
	rt := Route{Gw: addrOf(nr.Gw), LinkIndex: nr.LinkIndex, Dev: r.linkName(nr.LinkIndex), OnLink: nr.Flags&unix.RTNH_F_ONLINK != 0}
	if p, ok := ipnet.Prefix(nr.Dst); ok && p.Bits() > 0 {
		rt.Dst = p
	}
	return rt
}

// RouteGet is the route the kernel picks for dst (`ip route get`).
func (r *Reader) RouteGet(dst netip.Addr) (Route, error) {
	routes, err := r.h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return Route{}, fmt.Errorf("no route to %s in %s (%v)", dst, r.label, err)
	}
	return r.route(routes[0]), nil
}

// Routes lists the main table's routes of family (unix.AF_INET or
// AF_INET6) leaving through dev; dev "" lists all of them.
func (r *Reader) Routes(dev string, family int) ([]Route, error) {
	filter, mask := &netlink.Route{}, uint64(0)
	if dev != "" {
		d, err := r.Device(dev)
		if err != nil {
			return nil, err
		}
		filter.LinkIndex, mask = d.Index, netlink.RT_FILTER_OIF
	}
	nrs, err := nldump.List(func() ([]netlink.Route, error) { return r.h.RouteListFiltered(family, filter, mask) })
	if err != nil {
		return nil, fmt.Errorf("list routes in %s: %w", r.label, err)
	}
	out := make([]Route, 0, len(nrs))
	for _, nr := range nrs {
		out = append(out, r.route(nr))
	}
	return out, nil
}

// Neighbours lists the neighbour entries of family on link (0: all links).
func (r *Reader) Neighbours(link, family int) ([]Neighbour, error) {
	ns, err := nldump.List(func() ([]netlink.Neigh, error) { return r.h.NeighList(link, family) })
	if err != nil {
		return nil, fmt.Errorf("list neighbours in %s: %w", r.label, err)
	}
	out := make([]Neighbour, 0, len(ns))
	for _, n := range ns {
		out = append(out, Neighbour{IP: addrOf(n.IP), MAC: n.HardwareAddr, State: n.State, Dev: r.linkName(n.LinkIndex)})
	}
	return out, nil
}

// Neighbour is the entry for ip on link, if any.
func (r *Reader) Neighbour(link int, ip netip.Addr) (Neighbour, bool, error) {
	ns, err := r.Neighbours(link, familyOf(ip))
	if err != nil {
		return Neighbour{}, false, err
	}
	for _, n := range ns {
		if n.IP == ip {
			return n, true, nil
		}
	}
	return Neighbour{}, false, nil
}

// FDB lists the forwarding entries of a VXLAN device that have a remote
// destination (the kernel's own local entries have none).
func (r *Reader) FDB(link int) ([]FDBEntry, error) {
	ns, err := nldump.List(func() ([]netlink.Neigh, error) { return r.h.NeighList(link, unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list FDB in %s: %w", r.label, err)
	}
	out := make([]FDBEntry, 0, len(ns))
	for _, n := range ns {
		dst := addrOf(n.IP)
		if !dst.IsValid() {
			continue
		}
		out = append(out, FDBEntry{MAC: n.HardwareAddr, Dst: dst, Permanent: n.State&netlink.NUD_PERMANENT != 0, Dev: r.linkName(n.LinkIndex)})
	}
	return out, nil
}
