package backend

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/nldump"
)

// EachNeigh passes each neighbour entry of family (AF_BRIDGE: the FDB) on
// link to f as the kernel's dump arrives, in namespace ns (nil: the
// caller's). A reconcile at 10000 peers held every entry at once with
// netlink's NeighList, twice per table, which grew the heap by tens of
// MiB every 30 s. The entry's IP and HardwareAddr point into the receive
// buffer: clone them to keep them past f. An interrupted dump is read
// again; reset is called first, to forget what f was shown.
func EachNeigh(ns *netns.NsHandle, link, family int, reset func(), f func(netlink.Neigh)) error {
	target := netns.None()
	if ns != nil {
		target = *ns
	}
	s, err := nl.GetNetlinkSocketAt(target, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink socket: %w", err)
	}
	defer s.Close()
	return nldump.Visit(reset, func() error {
		req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
		req.AddData(&netlink.Ndmsg{Family: uint8(family), Index: uint32(link)})
		return req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH, func(m []byte) bool {
			ne, err := netlink.NeighDeserialize(m)
			if err == nil && ne.LinkIndex == link && ne.Family == family {
				f(*ne)
			}
			return true
		})
	})
}
