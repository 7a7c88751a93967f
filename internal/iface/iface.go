// Package iface chooses the node's external interface (the underlay) and the
// addresses flanneld advertises, following upstream flanneld's --iface,
// --iface-regex, --iface-can-reach and default-route rules. It works in the
// calling thread's network namespace.
package iface

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/nldump"
)

// Options are flanneld's interface-selection flags plus the address families
// the network needs.
type Options struct {
	// Ifaces (--iface, repeatable) are interface names or IP addresses,
	// tried in order; the first usable one wins.
	Ifaces []string
	// IfaceRegex (--iface-regex, repeatable) are tried in order when no
	// Ifaces entry is usable; each is matched against every interface's
	// addresses first, then against every interface's name.
	IfaceRegex []string
	// IfaceCanReach (--iface-can-reach) picks the interface the kernel would
	// use to reach this address, when no Ifaces or IfaceRegex entry is usable.
	IfaceCanReach string
	// PublicIP (--public-ip) overrides the advertised IPv4; zero = unset.
	PublicIP netip.Addr
	// PublicIPv6 (--public-ipv6) overrides the advertised IPv6; zero = unset.
	PublicIPv6 netip.Addr
	// EnableIPv4 and EnableIPv6 say which addresses the interface must have.
	// With both false, IPv4 is assumed.
	EnableIPv4, EnableIPv6 bool
}

// candidate is an interface under consideration, and the address that made
// it a candidate (an --iface IP, a regex-matched IP, a route source), if any.
type candidate struct {
	link netlink.Link
	addr netip.Addr
}

// Select chooses the external interface as upstream flanneld does. With
// any of --iface, --iface-regex or --iface-can-reach given, it falls
// through them in that order: every --iface entry, then every
// --iface-regex entry, then --iface-can-reach; the first usable interface
// wins. With none of them, the interface that owns --public-ip (or
// --public-ipv6) is taken, else the interface of the default route.
func Select(opts Options) (*backend.ExternalInterface, error) {
	if !opts.EnableIPv4 && !opts.EnableIPv6 {
		opts.EnableIPv4 = true
	}
	if err := checkPublic(&opts); err != nil {
		return nil, err
	}
	if len(opts.Ifaces) == 0 && len(opts.IfaceRegex) == 0 && opts.IfaceCanReach == "" {
		return byPublicIP(opts)
	}
	var problems []string
	for _, try := range []struct {
		given bool
		pick  func(Options) (*backend.ExternalInterface, error)
	}{
		{len(opts.Ifaces) > 0, byIfaces},
		{len(opts.IfaceRegex) > 0, byRegex},
		{opts.IfaceCanReach != "", byCanReach},
	} {
		if !try.given {
			continue
		}
		ext, err := try.pick(opts)
		if err == nil {
			return ext, nil
		}
		klog.Infof("%v; trying the next interface option", err)
		problems = append(problems, err.Error())
	}
	return nil, fmt.Errorf("no usable interface among those --iface, --iface-regex and --iface-can-reach name: %s", strings.Join(problems, "; "))
}

// byPublicIP takes the interface that owns the public address, as upstream
// does when no interface option is given. Where no interface owns it (the
// address is a NAT's), upstream gives up; the default route's interface is
// taken instead, still advertising the public address.
func byPublicIP(opts Options) (*backend.ExternalInterface, error) {
	ip := opts.PublicIP
	if !ip.IsValid() {
		ip = opts.PublicIPv6
	}
	if !ip.IsValid() {
		return byDefaultRoute(opts)
	}
	link, err := linkWithAddr(ip)
	if err != nil {
		klog.Infof("public address %s is on no interface of this node (%v); using the default route's interface", ip, err)
		return byDefaultRoute(opts)
	}
	return build(candidate{link: link, addr: ip}, opts)
}

// CheckPublicAddr refuses an address that other nodes can never send to:
// unspecified, loopback, multicast or the IPv4 broadcast address. flag
// names the parameter (public-ip or public-ipv6) for the message.
func CheckPublicAddr(flag string, a netip.Addr) error {
	a = a.Unmap()
	bad := ""
	switch {
	case a.IsUnspecified():
		bad = "the unspecified address"
	case a.IsLoopback():
		bad = "a loopback address"
	case a.IsMulticast():
		bad = "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		bad = "the broadcast address"
	default:
		return nil
	}
	example := "--public-ip=10.0.0.5"
	if flag == "public-ipv6" {
		example = "--public-ipv6=fd00::5"
	}
	return fmt.Errorf("--%s %s is %s, which no other node can send packets to: give a unicast address of this node that the others reach, e.g. %s",
		flag, a, bad, example)
}

func checkPublic(opts *Options) error {
	for _, p := range []struct {
		flag string
		a    netip.Addr
	}{{"public-ip", opts.PublicIP}, {"public-ipv6", opts.PublicIPv6}} {
		if p.a.IsValid() {
			if err := CheckPublicAddr(p.flag, p.a); err != nil {
				return err
			}
		}
	}
	if opts.PublicIP.IsValid() {
		switch {
		case !opts.PublicIP.Unmap().Is4():
			return fmt.Errorf("--public-ip %s is not an IPv4 address (use --public-ipv6 for IPv6)", opts.PublicIP)
		case !opts.EnableIPv4:
			klog.Warningf("ignoring --public-ip %s: the network has no IPv4 (EnableIPv4 is false)", opts.PublicIP)
			opts.PublicIP = netip.Addr{}
		default:
			opts.PublicIP = opts.PublicIP.Unmap()
		}
	}
	if opts.PublicIPv6.IsValid() {
		switch {
		case !opts.PublicIPv6.Is6() || opts.PublicIPv6.Is4In6():
			return fmt.Errorf("--public-ipv6 %s is not an IPv6 address (use --public-ip for IPv4)", opts.PublicIPv6)
		case !opts.EnableIPv6:
			klog.Warningf("ignoring --public-ipv6 %s: the network has no IPv6 (EnableIPv6 is false)", opts.PublicIPv6)
			opts.PublicIPv6 = netip.Addr{}
		}
	}
	return nil
}

func byIfaces(opts Options) (*backend.ExternalInterface, error) {
	var problems []string
	for _, s := range opts.Ifaces {
		c, err := lookupIface(s)
		if err == nil {
			var ext *backend.ExternalInterface
			if ext, err = build(c, opts); err == nil {
				return ext, nil
			}
		}
		klog.Infof("--iface %s is not usable: %v", s, err)
		problems = append(problems, fmt.Sprintf("%s: %v", s, err))
	}
	return nil, fmt.Errorf("none of the interfaces given by --iface is usable (%s); check the names and addresses with `ip addr`", strings.Join(problems, "; "))
}

// lookupIface resolves one --iface value: an IP address on some interface,
// or an interface name.
func lookupIface(s string) (candidate, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		ip = ip.Unmap()
		link, err := linkWithAddr(ip)
		if err != nil {
			return candidate{}, err
		}
		return candidate{link: link, addr: ip}, nil
	}
	link, err := netlink.LinkByName(s)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return candidate{}, errors.New("no such interface")
		}
		return candidate{}, fmt.Errorf("look up interface: %w", err)
	}
	return candidate{link: link}, nil
}

// linkWithAddr finds the interface carrying ip.
func linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if toAddr(a.IP) == ip {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, errors.New("no interface has this address")
}

func byRegex(opts Options) (*backend.ExternalInterface, error) {
	links, err := sortedLinks()
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, expr := range opts.IfaceRegex {
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("--iface-regex %q is not a valid regular expression: %w", expr, err)
		}
		cands, err := regexCandidates(re, links, opts)
		if err != nil {
			return nil, err
		}
		if len(cands) == 0 {
			problems = append(problems, fmt.Sprintf("%s: matches no interface name or address", expr))
			continue
		}
		for _, c := range cands {
			ext, err := build(c, opts)
			if err == nil {
				return ext, nil
			}
			klog.Infof("--iface-regex %s matches %s, which is not usable: %v", expr, c.link.Attrs().Name, err)
			problems = append(problems, fmt.Sprintf("%s: %s: %v", expr, c.link.Attrs().Name, err))
		}
	}
	return nil, fmt.Errorf("no usable interface matches --iface-regex (%s)", strings.Join(problems, "; "))
}

// regexCandidates lists what re matches, as upstream orders it: interfaces
// whose global addresses (of the families the network needs) match, then
// interfaces whose names match.
func regexCandidates(re *regexp.Regexp, links []netlink.Link, opts Options) ([]candidate, error) {
	var byAddr, byName []candidate
	for _, l := range links {
		addrs, err := globalAddrs(l, opts)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if re.MatchString(a.String()) {
				byAddr = append(byAddr, candidate{link: l, addr: a})
				break
			}
		}
		if re.MatchString(l.Attrs().Name) {
			byName = append(byName, candidate{link: l})
		}
	}
	return append(byAddr, byName...), nil
}

func byCanReach(opts Options) (*backend.ExternalInterface, error) {
	dst, err := netip.ParseAddr(opts.IfaceCanReach)
	if err != nil {
		return nil, fmt.Errorf("--iface-can-reach %q is not an IP address: %w", opts.IfaceCanReach, err)
	}
	dst = dst.Unmap()
	routes, err := netlink.RouteGet(net.IP(dst.AsSlice()))
	if err != nil {
		return nil, fmt.Errorf("--iface-can-reach %s: no route to it in this network namespace: %w", dst, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex <= 0 {
		return nil, fmt.Errorf("--iface-can-reach %s: the kernel returned no route through an interface", dst)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("--iface-can-reach %s: interface index %d: %w", dst, routes[0].LinkIndex, err)
	}
	c := candidate{link: link, addr: toAddr(routes[0].Src)}
	// An address of this node is reached through lo; the operator means
	// the interface that carries it.
	if link.Attrs().Flags&net.FlagLoopback != 0 {
		if l, err := linkWithAddr(dst); err == nil {
			c = candidate{link: l, addr: dst}
		}
	}
	return build(c, opts)
}

func byDefaultRoute(opts Options) (*backend.ExternalInterface, error) {
	family, name := netlink.FAMILY_V4, "IPv4"
	if !opts.EnableIPv4 {
		family, name = netlink.FAMILY_V6, "IPv6"
	}
	idx, err := defaultRouteLink(family)
	if err != nil {
		return nil, err
	}
	if idx == 0 {
		return nil, fmt.Errorf("no %s default route in this network namespace to take the external interface from: pass --iface or --iface-can-reach to choose it", name)
	}
	link, err := netlink.LinkByIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("interface of the %s default route (index %d): %w", name, idx, err)
	}
	return build(candidate{link: link}, opts)
}

// defaultRouteLink returns the interface index of the main table's default
// route with the lowest metric (the one the kernel uses), or 0 if none.
func defaultRouteLink(family int) (int, error) {
	routes, err := nldump.List(func() ([]netlink.Route, error) { return netlink.RouteList(nil, family) })
	if err != nil {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	best, bestPrio := 0, 0
	for _, r := range routes {
		if !isDefault(r.Dst) {
			continue
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		if idx > 0 && (best == 0 || r.Priority < bestPrio) {
			best, bestPrio = idx, r.Priority
		}
	}
	return best, nil
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}

// build fills in the interface's addresses. A candidate address of the right
// family (the --iface IP, the matched IP, the route source) is used as is;
// otherwise the first global address of each needed family is taken.
func build(c candidate, opts Options) (*backend.ExternalInterface, error) {
	attrs := c.link.Attrs()
	ifc, err := net.InterfaceByIndex(attrs.Index)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", attrs.Name, err)
	}
	if attrs.Flags&net.FlagUp == 0 {
		klog.Warningf("interface %s is down: traffic to other nodes will not flow until it is up", attrs.Name)
	}
	addrs, err := globalAddrs(c.link, opts)
	if err != nil {
		return nil, err
	}
	ext := &backend.ExternalInterface{Iface: ifc}
	if opts.EnableIPv4 {
		if ext.IfaceAddr = pick(c.addr, addrs, netip.Addr.Is4); !ext.IfaceAddr.IsValid() {
			return nil, fmt.Errorf("interface %s has no global IPv4 address, which the network needs (EnableIPv4): add one, or choose another interface with --iface", attrs.Name)
		}
		ext.ExtAddr = ext.IfaceAddr
		if opts.PublicIP.IsValid() {
			ext.ExtAddr = opts.PublicIP
		}
	}
	if opts.EnableIPv6 {
		if ext.IfaceV6Addr = pick(c.addr, addrs, netip.Addr.Is6); !ext.IfaceV6Addr.IsValid() {
			return nil, fmt.Errorf("interface %s has no global IPv6 address, which the network needs (EnableIPv6): add one, or choose another interface with --iface", attrs.Name)
		}
		ext.ExtV6Addr = ext.IfaceV6Addr
		if opts.PublicIPv6.IsValid() {
			ext.ExtV6Addr = opts.PublicIPv6
		}
	}
	return ext, nil
}

func pick(preferred netip.Addr, addrs []netip.Addr, family func(netip.Addr) bool) netip.Addr {
	if preferred.IsValid() && family(preferred) {
		return preferred
	}
	for _, a := range addrs {
		if family(a) {
			return a
		}
	}
	return netip.Addr{}
}

// globalAddrs lists link's global-scope addresses of the needed families in
// the kernel's order (primary first), leaving out IPv6 addresses that failed
// duplicate address detection.
func globalAddrs(link netlink.Link, opts Options) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range []struct {
		on     bool
		family int
	}{{opts.EnableIPv4, netlink.FAMILY_V4}, {opts.EnableIPv6, netlink.FAMILY_V6}} {
		if !f.on {
			continue
		}
		addrs, err := nldump.List(func() ([]netlink.Addr, error) { return netlink.AddrList(link, f.family) })
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
		}
		for _, a := range addrs {
			if a.Scope != unix.RT_SCOPE_UNIVERSE || a.Flags&unix.IFA_F_DADFAILED != 0 {
				continue
			}
			if ip := toAddr(a.IP); ip.IsValid() {
				out = append(out, ip)
			}
		}
	}
	return out, nil
}

func sortedLinks() ([]netlink.Link, error) {
	links, err := nldump.List(func() ([]netlink.Link, error) { return netlink.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	return links, nil
}

func toAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// LogLine describes the chosen interface for the operator's log, e.g.
// "using interface eth1 (index 3, MTU 1500) with address 198.51.100.11,
// public address 198.51.100.11".
func LogLine(e *backend.ExternalInterface) string {
	if e == nil || e.Iface == nil {
		return "no external interface chosen"
	}
	var parts []string
	if e.IfaceAddr.IsValid() || e.ExtAddr.IsValid() {
		parts = append(parts, fmt.Sprintf("address %s, public address %s", show(e.IfaceAddr), show(e.ExtAddr)))
	}
	if e.IfaceV6Addr.IsValid() || e.ExtV6Addr.IsValid() {
		parts = append(parts, fmt.Sprintf("IPv6 address %s, public IPv6 address %s", show(e.IfaceV6Addr), show(e.ExtV6Addr)))
	}
	s := fmt.Sprintf("using interface %s (index %d, MTU %d)", e.Iface.Name, e.Iface.Index, e.Iface.MTU)
	if len(parts) == 0 {
		return s + " with no address"
	}
	return s + " with " + strings.Join(parts, ", ")
}

func show(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}
