// Package kernelstate reads, without changing anything, what a network
// namespace's kernel holds for flannel: devices and their MTU, the route,
// neighbour and FDB entry for each VXLAN peer, host-gw routes, and the
// route the kernel would pick for an address. It is the one inspector used
// by the e2e tests, `flannelctl lab check`'s packet walk and `flannelctl
// doctor`, so that all three judge the kernel by the same reading.
package kernelstate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
)

// Reader reads the tables of one network namespace.
type Reader struct {
	h     *netlink.Handle
	label string
}

// Open returns a Reader for a namespace: "" is the caller's own, a name is
// one under /run/netns (as `ip netns` makes them), a path is a namespace
// file (/proc/PID/ns/net).
func Open(ns string) (*Reader, error) {
	if ns == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("netlink in this namespace: %w", err)
		}
		return &Reader{h: h, label: "this namespace"}, nil
	}
	var nsh netns.NsHandle
	var err error
	if strings.Contains(ns, "/") {
		nsh, err = netns.GetFromPath(ns)
	} else {
		nsh, err = netns.GetFromName(ns)
	}
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns, err)
	}
	return &Reader{h: h, label: ns}, nil
}

// With opens ns, runs fn and closes the Reader.
func With(ns string, fn func(r *Reader) error) error {
	r, err := Open(ns)
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r)
}

// Close releases the netlink socket.
func (r *Reader) Close() { r.h.Close() }

// ErrNoDevice is returned (wrapped) when a device does not exist.
var ErrNoDevice = errors.New("no such device")

// Device is a link as flannel cares about it.
type Device struct {
	Name  string
	Kind  string // vxlan, bridge, veth, ...
	Index int
	MTU   int
	Up    bool
	MAC   net.HardwareAddr
	Addrs []netip.Prefix // global and link-local addresses of both families
	// VXLAN only.
	VNI, Port int
}

// Device reads the link called name.
func (r *Reader) Device(name string) (*Device, error) {
	l, err := r.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%s in %s: %w", name, r.label, ErrNoDevice)
		}
		return nil, fmt.Errorf("look up %s in %s: %w", name, r.label, err)
	}
	return r.device(l)
}

func (r *Reader) device(l netlink.Link) (*Device, error) {
	a := l.Attrs()
	d := &Device{Name: a.Name, Kind: l.Type(), Index: a.Index, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, MAC: a.HardwareAddr}
	if vx, ok := l.(*netlink.Vxlan); ok {
		d.VNI, d.Port = vx.VxlanId, vx.Port
	}
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return r.h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s in %s: %w", a.Name, r.label, err)
	}
	for _, ad := range addrs {
		if p, ok := ipnet.Prefix(ad.IPNet); ok {
			d.Addrs = append(d.Addrs, p)
		}
	}
	return d, nil
}

// DeviceByIndex reads the link with the given index.
func (r *Reader) DeviceByIndex(idx int) (*Device, error) {
	l, err := r.h.LinkByIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("link %d in %s: %w", idx, r.label, err)
	}
	return r.device(l)
}

// Addresses lists every address in the namespace, by device name.
func (r *Reader) Addresses() (map[string][]netip.Prefix, error) {
	links, err := nldump.List(func() ([]netlink.Link, error) { return r.h.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", r.label, err)
	}
	out := map[string][]netip.Prefix{}
	for _, l := range links {
		d, err := r.device(l)
		if err != nil {
			return nil, err
		}
		out[d.Name] = d.Addrs
	}
	return out, nil
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
