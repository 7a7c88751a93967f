package backend

import (
	"errors"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
)

// FlannelShaped says whether r looks like a route a flannel backend
// installs for a peer in network, and returns its destination: main table,
// protocol "boot" (what netlink writes by default, and what upstream
// flanneld writes), a gateway, and a destination inside network. Routes of
// other protocols (a routing daemon's, DHCP's) never are, so an
// operator's own routes into the pod range survive a prune.
func FlannelShaped(r netlink.Route, network netip.Prefix) (netip.Prefix, bool) {
	dst, ok := ipnet.Prefix(r.Dst)
	return dst, ok && r.Gw != nil && r.Protocol == unix.RTPROT_BOOT && within(dst, network)
}

// within says whether p is network itself or a part of it.
func within(p, network netip.Prefix) bool {
	return p.Bits() >= network.Bits() && network.Masked().Contains(p.Addr())
}

// IsGone says whether a delete failed only because the object was already
// absent, which callers treat as success.
func IsGone(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT)
}
