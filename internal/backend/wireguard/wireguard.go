// Package wireguard is the wireguard backend: an encrypted overlay, one
// WireGuard peer per node with its subnets as allowed IPs, laid out as
// upstream flanneld does (devices flannel-wg and, in Mode separate,
// flannel-wg-v6; ports 51820/51821; the public key in the lease as
// {"PublicKey":"..."}), so that nodes of both kinds talk to each other.
//
// Where the kernel has no WireGuard module the backend runs wireguard-go
// inside flanneld on a TUN device of the same name: same wire protocol,
// same configuration, chosen automatically unless Implementation says
// otherwise.
package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

const (
	// TypeName is the Backend "Type" this package serves.
	TypeName = "wireguard"
	// DeviceName and DeviceNameV6 are upstream's device names.
	DeviceName   = "flannel-wg"
	DeviceNameV6 = "flannel-wg-v6"
)

// Backend is a wireguard backend bound to one external interface.
type Backend struct {
	backend.Tunnel[Options]
}

// New is the backend.Factory for "wireguard"; it works in the process's
// current network namespace.
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	t, err := backend.NewTunnel("wireguard", ext, raw, parseOptions)
	if err != nil {
		return nil, err
	}
	return &Backend{t}, nil
}

// RegisterNetwork loads (or makes) the private key and creates the
// devices, listening on their ports, before the lease is taken.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return nil, fmt.Errorf("wireguard: the network enables neither IPv4 nor IPv6")
	}
	if err := b.checkAddresses(cfg); err != nil {
		return nil, err
	}
	mtu, err := b.mtu(cfg)
	if err != nil {
		return nil, err
	}
	key, err := loadOrCreateKey(KeyFile())
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	n := &network{b: b, cfg: cfg, key: key, mtu: mtu}
	if err := n.createTunnels(); err != nil {
		n.close()
		return nil, err
	}
	var sets []backend.PeerEngine
	for _, t := range n.tunnels {
		sets = append(sets, t.set)
	}
	n.peers = backend.NewPeers(backend.PeersConfig{Name: "wireguard", Sets: sets, Owned: n.owned, Check: n.repair})
	for _, t := range n.tunnels {
		if u, ok := t.dev.(*userDevice); ok {
			u.OnSetByHand(n.peers.Kick)
		}
	}
	return n, nil
}

// checkAddresses makes sure peers can be reached over the families the
// Mode sends on.
func (b *Backend) checkAddresses(cfg *config.Config) error {
	has4, has6 := b.Ext.ExtAddr.Unmap().Is4(), b.Ext.ExtV6Addr.Is6() && !b.Ext.ExtV6Addr.Is4In6()
	need4 := (b.Opts.Mode == Separate && cfg.EnableIPv4) || b.Opts.Mode == IPv4
	need6 := (b.Opts.Mode == Separate && cfg.EnableIPv6) || b.Opts.Mode == IPv6
	switch {
	case need4 && !has4:
		return fmt.Errorf("wireguard: interface %s has no IPv4 address, which Mode %q needs to reach peers", b.Ext.Iface.Name, b.Opts.Mode)
	case need6 && !has6:
		return fmt.Errorf("wireguard: interface %s has no IPv6 address, which Mode %q needs to reach peers", b.Ext.Iface.Name, b.Opts.Mode)
	case !has4 && !has6:
		return fmt.Errorf("wireguard: interface %s has no address to reach peers from", b.Ext.Iface.Name)
	}
	return nil
}

func (b *Backend) mtu(cfg *config.Config) (int, error) {
	underlay := b.Ext.Iface.MTU
	if b.Opts.MTU > 0 {
		underlay = b.Opts.MTU
	}
	mtu := underlay - overhead
	if mtu < minMTUv4 || (cfg.EnableIPv6 && mtu < minMTUv6) {
		return 0, fmt.Errorf("wireguard: MTU %d of %s leaves pods %d bytes after the %d-byte encapsulation, too few for %s",
			underlay, b.Ext.Iface.Name, mtu, overhead, map[bool]string{false: "IPv4 (576)", true: "IPv6 (1280)"}[cfg.EnableIPv6])
	}
	return mtu, nil
}

type network struct {
	b   *Backend
	cfg *config.Config
	key wgtypes.Key
	mtu int

	tunnels  []*tunnel // one, or two in Mode separate with dual stack
	fellBack bool      // the userspace fallback was logged
	// peers is the lock over the tunnels' peers, and their healer.
	peers *backend.Peers
	own   *lease.Lease // under the peers' lock, once activated
}

// createTunnels makes flannel-wg (and flannel-wg-v6 in Mode separate).
func (n *network) createTunnels() error {
	o := n.b.Opts
	if o.Mode != Separate {
		return n.addTunnel(DeviceName, o.ListenPort, n.cfg.EnableIPv4, n.cfg.EnableIPv6)
	}
	if n.cfg.EnableIPv4 {
		if err := n.addTunnel(DeviceName, o.ListenPort, true, false); err != nil {
			return err
		}
	}
	if n.cfg.EnableIPv6 {
		return n.addTunnel(DeviceNameV6, o.ListenPortV6, false, true)
	}
	return nil
}

func (n *network) addTunnel(name string, port int, v4, v6 bool) error {
	dev, err := n.createDevice(name)
	if err != nil {
		return err
	}
	t := newTunnel(n, dev, port, v4, v6)
	n.tunnels = append(n.tunnels, t)
	err = dev.Configure(wgtypes.Config{PrivateKey: &n.key, ListenPort: &port, ReplacePeers: true})
	if err != nil {
		return fmt.Errorf("wireguard: configure %s (private key, listen port %d): %w; is the port taken by another process?", name, port, err)
	}
	klog.Infof("wireguard: %s (%s, MTU %d) listening on UDP %d, public key %s", name, dev.Kind(), n.mtu, port, n.key.PublicKey())
	return nil
}

// createDevice picks the implementation: the kernel module when asked or
// when present, else wireguard-go, saying so once.
func (n *network) createDevice(name string) (device, error) {
	impl := n.b.Opts.Implementation
	if impl != ImplUserspace {
		d, err := newKernelDevice(n.b.NL, name, n.mtu)
		if err == nil {
			return d, nil
		}
		if impl == ImplKernel || !errors.Is(err, errNoKernelModule) {
			return nil, fmt.Errorf("wireguard: %w (\"Implementation\":\"userspace\" runs WireGuard inside flanneld instead)", err)
		}
		if !n.fellBack {
			n.fellBack = true
			klog.Warningf("wireguard: the kernel has no WireGuard module (%v); using the userspace implementation (wireguard-go) inside flanneld. "+
				"Pod traffic stops while flanneld restarts; load the wireguard module for the kernel data path", err)
		}
	}
	if old, err := n.b.NL.LinkByName(name); err == nil && old.Type() != "tuntap" {
		if err := n.b.NL.LinkDel(old); err != nil {
			return nil, fmt.Errorf("wireguard: remove the %s link %s left by an earlier run: %w", old.Type(), name, err)
		}
	}
	d, err := newUserDevice(name, n.mtu)
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	return d, nil
}

func (n *network) close() {
	for _, t := range n.tunnels {
		_ = t.dev.Close()
	}
}

// LeaseAttrs publishes the public key for each family the network has,
// as upstream does.
func (n *network) LeaseAttrs() lease.Attrs {
	a := lease.Attrs{BackendType: TypeName}
	data := encodeLeaseData(n.key.PublicKey())
	if n.cfg.EnableIPv4 {
		a.BackendData = data
	}
	if n.cfg.EnableIPv6 {
		a.BackendV6Data = data
	}
	return a
}

func (n *network) MTU() int { return n.mtu }

// Transport names the listen ports in use: IPv4 peers are probed, and
// with Mode separate IPv6 has a port of its own.
func (n *network) Transport() string {
	o := n.b.Opts
	if o.Mode == Separate && n.cfg.EnableIPv6 {
		return fmt.Sprintf("UDP %d and %d for IPv6 (WireGuard)", o.ListenPort, o.ListenPortV6)
	}
	return fmt.Sprintf("UDP %d (WireGuard)", o.ListenPort)
}

// Activate addresses the devices, routes the networks through them and
// starts watching handshakes. Userspace devices end with ctx.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	var err error
	n.peers.Locked(func() {
		mine := *own
		n.own = &mine
		err = n.repair(backend.Repairs{})
	})
	if err != nil {
		return err
	}
	go n.watchHandshakes(ctx, 5*time.Second)
	go func() {
		<-ctx.Done()
		n.peers.Locked(func() {
			for _, t := range n.tunnels {
				if _, user := t.dev.(*userDevice); user {
					_ = t.dev.Close()
				}
			}
		})
	}()
	return nil
}

// repair gives each device its addresses and routes, as far as they are
// missing; under the peers' lock.
func (n *network) repair(r backend.Repairs) error {
	if n.own == nil {
		return nil // not activated yet
	}
	for _, t := range n.tunnels {
		if err := t.repair(n.own, r); err != nil {
			return err
		}
	}
	return nil
}

// owned is what the healer watches: the devices and the networks' routes
// through them. A peer removed from a device by hand sends no netlink
// notification; the handshake watch notices it (see checkHandshakes).
func (n *network) owned() *backend.Owned {
	o := &backend.Owned{Devices: map[int]bool{}, Names: map[string]bool{}, Ext: -1}
	var inLine []func(netlink.RouteUpdate) bool
	for _, t := range n.tunnels {
		o.Names[t.dev.Name()] = true
		var nets []netip.Prefix
		if t.v4 {
			nets = append(nets, n.cfg.Network)
		}
		if t.v6 {
			nets = append(nets, n.cfg.IPv6Network)
		}
		o.Networks = append(o.Networks, nets...)
		if t.index > 0 {
			o.Devices[t.index] = true
		}
		inLine = append(inLine, backend.TunnelRoutesInLine(t.index, nets...))
	}
	o.RouteInLine = func(u netlink.RouteUpdate) bool {
		for _, f := range inLine {
			if !f(u) {
				return false
			}
		}
		return true
	}
	return o
}

// HandleEvents adds, updates and removes peers; see backend.Peers. The
// first batch is the full set of leases; after it, peers no lease
// accounts for are removed.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.peers.Apply(events, func(ev lease.Event) {
		for _, t := range n.tunnels {
			t.handle(ev)
		}
	})
}

// Heal keeps the devices' addresses, routes and peers in place; see
// backend.Healer.
func (n *network) Heal(ctx context.Context, cfg backend.HealConfig) { n.peers.Heal(ctx, cfg, nil) }
