package backend

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// OpenUnderlay is the common start of every kernel backend's constructor:
// it refuses a missing external interface, then returns h, or when h is
// nil a new netlink handle in the process's current network namespace.
// name ("vxlan", "host-gw", ...) begins its errors.
func OpenUnderlay(name string, ext *ExternalInterface, h *netlink.Handle) (*netlink.Handle, error) {
	if ext == nil || ext.Iface == nil {
		return nil, fmt.Errorf("%s: no external interface", name)
	}
	if h != nil {
		return h, nil
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("%s: open netlink: %w", name, err)
	}
	return h, nil
}
