package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/nldump"
	"github.com/flannelgo/flannel/internal/pace"
)

// blackholeMetric is far above the bridge's connected route (metric 0), so
// the blackhole only takes over when cni0 is gone: traffic for this node's
// pods is then dropped instead of leaking out of the default route.
const blackholeMetric = 32000

// ensureBlackholeRoutes adds the blackhole route for each of the lease's
// subnets that lacks one and returns the subnets it had to add.
func ensureBlackholeRoutes(own *lease.Lease) ([]netip.Prefix, error) {
	var added []netip.Prefix
	for _, p := range []netip.Prefix{own.Subnet, own.IPv6Subnet} {
		if !p.IsValid() {
			continue
		}
		r := &netlink.Route{
			Dst:      &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Type:     unix.RTN_BLACKHOLE,
			Priority: blackholeMetric,
		}
		family := netlink.FAMILY_V4
		if p.Addr().Is6() {
			family = netlink.FAMILY_V6
		}
		have, err := nldump.List(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(family, r, netlink.RT_FILTER_DST|netlink.RT_FILTER_TYPE|netlink.RT_FILTER_PRIORITY)
		})
		if err == nil && len(have) > 0 {
			continue
		}
		if err := netlink.RouteReplace(r); err != nil {
			return added, fmt.Errorf("add blackhole route for %s (--ip-blackhole-route): %w", p, err)
		}
		added = append(added, p)
	}
	return added, nil
}

// keepBlackholeRoutes re-checks the blackhole routes every resync period
// (--iptables-resync) until ctx ends, as upstream re-checks its rules: a
// route deleted by hand or by another agent comes back.
func keepBlackholeRoutes(ctx context.Context, own *lease.Lease, every time.Duration) {
	if every <= 0 {
		every = 5 * time.Second // upstream's --iptables-resync default
	}
	pace.Every(ctx, every, 0, func(context.Context) bool {
		added, err := ensureBlackholeRoutes(own)
		if err != nil {
			klog.Errorf("%v (retrying in %s)", err, every)
		}
		for _, p := range added {
			klog.Infof("blackhole route for %s was missing; restored it", p)
		}
		return true
	})
}
