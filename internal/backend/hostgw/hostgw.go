// Package hostgw is the host-gw backend: no encapsulation, just a route per
// peer, "<peer subnet> via <peer public address> dev <external iface>". It
// only works when every node shares one L2 segment; a peer that does not is
// reported to the operator instead of getting a route that would black-hole
// its pods' traffic.
package hostgw

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/lease"
)

// TypeName is the Backend "Type" this package serves.
const TypeName = "host-gw"

// minMTUv6 is the smallest link MTU IPv6 allows (RFC 8200).
const minMTUv6 = 1280

// Options are the host-gw keys of net-conf.json's Backend object.
type Options struct {
	// MTU overrides the pods' MTU; 0 means the external interface's MTU,
	// since host-gw adds no header.
	MTU int
}

func parseOptions(raw json.RawMessage) (Options, error) {
	var o Options
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return o, fmt.Errorf("host-gw backend config: %w", err)
		}
	}
	if o.MTU < 0 || (o.MTU > 0 && o.MTU < 576) {
		return o, fmt.Errorf("host-gw backend config: MTU %d is below the IPv4 minimum of 576", o.MTU)
	}
	return o, nil
}

// Backend is a host-gw backend bound to one external interface.
type Backend struct {
	ext  *backend.ExternalInterface
	opts Options
	nl   *netlink.Handle
	ns   *netns.NsHandle // where nl works, for netlink notifications; nil: here
}

// WatchNamespace names the network namespace nl is bound to, so that the
// healer subscribes to that namespace's netlink notifications.
func (b *Backend) WatchNamespace(ns netns.NsHandle) { b.ns = &ns }

// New is the backend.Factory for "host-gw"; it works in the process's
// current network namespace.
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	return NewWithHandle(nil, ext, raw)
}

// NewWithHandle builds the backend on a given netlink handle, for example
// one bound to another network namespace (nil: a new one in the current
// namespace).
func NewWithHandle(h *netlink.Handle, ext *backend.ExternalInterface, raw json.RawMessage) (*Backend, error) {
	opts, err := parseOptions(raw)
	if err != nil {
		return nil, err
	}
	h, err = backend.OpenUnderlay("host-gw", ext, h)
	if err != nil {
		return nil, err
	}
	return &Backend{ext: ext, opts: opts, nl: h}, nil
}

// RegisterNetwork checks that the external interface has an address of
// every family the network uses: the routes' next hops are peers' addresses
// on that interface's segment.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return nil, fmt.Errorf("host-gw: the network enables neither IPv4 nor IPv6")
	}
	mtu, err := b.mtu(cfg)
	if err != nil {
		return nil, err
	}
	n := &network{b: b, mtu: mtu}
	if cfg.EnableIPv4 {
		if !b.ext.IfaceAddr.Unmap().Is4() {
			return nil, fmt.Errorf("host-gw: interface %s has no IPv4 address to route IPv4 pod traffic through", b.ext.Iface.Name)
		}
		n.v4 = newFamily(b, false, cfg.Network, b.ext.IfaceAddr.Unmap())
	}
	if cfg.EnableIPv6 {
		if !b.ext.IfaceV6Addr.Is6() || b.ext.IfaceV6Addr.Is4In6() {
			return nil, fmt.Errorf("host-gw: interface %s has no IPv6 address to route IPv6 pod traffic through", b.ext.Iface.Name)
		}
		n.v6 = newFamily(b, true, cfg.IPv6Network, b.ext.IfaceV6Addr)
	}
	var sets []backend.PeerEngine
	for _, f := range n.families() {
		sets = append(sets, f.peers)
	}
	n.peers = backend.NewPeers(backend.PeersConfig{Name: "host-gw", Sets: sets, Owned: n.owned, Check: func(backend.Repairs) error { return b.extUp() }})
	return n, nil
}

func (b *Backend) mtu(cfg *config.Config) (int, error) {
	mtu := b.ext.Iface.MTU
	if b.opts.MTU > 0 {
		if b.opts.MTU > mtu {
			return 0, fmt.Errorf("host-gw: MTU %d is larger than the MTU of %s (%d); host-gw sends pod packets unchanged, so pods can use at most %d",
				b.opts.MTU, b.ext.Iface.Name, mtu, mtu)
		}
		mtu = b.opts.MTU
	}
	if cfg.EnableIPv6 && mtu < minMTUv6 {
		return 0, fmt.Errorf("host-gw: MTU %d is below the IPv6 minimum of %d; raise the MTU of %s", mtu, minMTUv6, b.ext.Iface.Name)
	}
	return mtu, nil
}

type network struct {
	b      *Backend
	mtu    int
	v4, v6 *family // nil when the network lacks that family
	peers  *backend.Peers
}

func (n *network) families() []*family {
	var out []*family
	for _, f := range []*family{n.v4, n.v6} {
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

// LeaseAttrs carries no backend data: peers need only the public addresses,
// which the daemon fills in.
func (n *network) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: TypeName} }

func (n *network) MTU() int { return n.mtu }

// Activate only records the node's own subnets: host-gw creates no device,
// and the subnets' local routes belong to the pods' bridge.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	var err error
	n.peers.Locked(func() {
		for _, f := range n.families() {
			subnet := f.subnetOf(own)
			if !subnet.IsValid() {
				err = fmt.Errorf("host-gw: own lease %s has no %s subnet although the network enables %s", own.Key(), f.name(), f.name())
				return
			}
			f.routes.SetOwn(subnet)
		}
	})
	return err
}

// HandleEvents adds, moves and removes peer routes; see backend.Peers.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.peers.Apply(events, func(ev lease.Event) {
		for _, f := range n.families() {
			f.handle(ev)
		}
	})
}

// owned is what the healer watches: the external interface, and routes
// into the networks that differ from what the peers want.
func (n *network) owned() *backend.Owned {
	o := &backend.Owned{Ext: n.b.ext.Iface.Index}
	for _, f := range n.families() {
		o.Networks = append(o.Networks, f.network)
	}
	v4, v6 := n.v4, n.v6
	o.RouteInLine = func(u netlink.RouteUpdate) bool {
		f := v4
		if dst, ok := ipnet.Prefix(u.Dst); ok && dst.Addr().Is6() {
			f = v6
		}
		return f != nil && backend.RouteInLine(f.table, u)
	}
	return o
}

// Heal keeps every peer's route in place; see backend.Healer.
func (n *network) Heal(ctx context.Context, cfg backend.HealConfig) { n.peers.Heal(ctx, cfg, n.b.ns) }

// extUp says why routes through the external interface cannot be
// restored now: it is gone or down (which flushed them).
func (b *Backend) extUp() error {
	ext, err := b.nl.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return fmt.Errorf("look up %s: %w", b.ext.Iface.Name, err)
	}
	if ext.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("%s is down; its routes are restored when it comes back up", b.ext.Iface.Name)
	}
	return nil
}
