package backend

import (
	"encoding/json"
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

// Tunnel is what the udp, wireguard and ipip backends are built on: the
// external interface, the backend section of net-conf.json parsed into
// O, and a netlink handle in the current network namespace.
type Tunnel[O any] struct {
	Ext  *ExternalInterface
	Opts O
	NL   *netlink.Handle
}

// NewTunnel parses raw with parse, then opens the underlay as OpenUnderlay
// does; name ("udp", ...) begins its errors.
func NewTunnel[O any](name string, ext *ExternalInterface, raw json.RawMessage, parse func(json.RawMessage) (O, error)) (Tunnel[O], error) {
	opts, err := parse(raw)
	if err != nil {
		return Tunnel[O]{}, err
	}
	h, err := OpenUnderlay(name, ext, nil)
	if err != nil {
		return Tunnel[O]{}, err
	}
	return Tunnel[O]{Ext: ext, Opts: opts, NL: h}, nil
}
