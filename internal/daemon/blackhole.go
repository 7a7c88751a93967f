package daemon

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/lease"
)

// blackholeMetric is far above the bridge's connected route (metric 0), so
// the blackhole only takes over when cni0 is gone: traffic for this node's
// pods is then dropped instead of leaking out of the default route.
const blackholeMetric = 32000

func addBlackholeRoutes(own *lease.Lease) error {
	for _, p := range []netip.Prefix{own.Subnet, own.IPv6Subnet} {
		if !p.IsValid() {
			continue
		}
		r := &netlink.Route{
			Dst:      &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Type:     unix.RTN_BLACKHOLE,
			Priority: blackholeMetric,
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add blackhole route for %s (--ip-blackhole-route): %w", p, err)
		}
	}
	return nil
}
