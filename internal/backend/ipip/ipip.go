// Package ipip is the ipip backend: pod packets inside a plain IPv4 header
// (protocol 4) through the device flannel.ipip, one onlink route per peer.
// With DirectRouting a peer on this node's L2 segment gets a plain route
// through the external interface instead, as upstream does. IPv4 only.
package ipip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/nldump"
)

const (
	// TypeName is the Backend "Type" this package serves.
	TypeName = "ipip"
	// DeviceName is upstream's tunnel device name.
	DeviceName = "flannel.ipip"
	// overhead is the outer IPv4 header.
	overhead = 20
)

// Options are the ipip keys of net-conf.json's Backend object.
type Options struct {
	DirectRouting bool
	// MTU is the underlay MTU, as for every backend; 0 means the external
	// interface's. The device and pods get MTU − 20.
	MTU int
}

func parseOptions(raw json.RawMessage) (Options, error) {
	var o Options
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return o, fmt.Errorf("ipip backend config: %w", err)
		}
	}
	if o.MTU != 0 && o.MTU-overhead < 576 {
		return o, fmt.Errorf("ipip backend config: MTU %d leaves less than the IPv4 minimum of 576 after the %d-byte ipip header", o.MTU, overhead)
	}
	return o, nil
}

// Backend is an ipip backend bound to one external interface.
type Backend struct {
	backend.Tunnel[Options]
	ns *netns.NsHandle // where NL works, for netlink notifications; nil: here
}

// WatchNamespace names the network namespace NL is bound to, so that the
// healer subscribes to that namespace's netlink notifications.
func (b *Backend) WatchNamespace(ns netns.NsHandle) { b.ns = &ns }

// New is the backend.Factory for "ipip".
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	t, err := backend.NewTunnel("ipip", ext, raw, parseOptions)
	if err != nil {
		return nil, err
	}
	return &Backend{Tunnel: t}, nil
}

// RegisterNetwork creates (or adopts) flannel.ipip, sending from the
// external interface's IPv4 address.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 || cfg.EnableIPv6 {
		return nil, fmt.Errorf("ipip: the network must be IPv4 only (ipip carries IPv4 in IPv4); use vxlan or wireguard for IPv6")
	}
	local := b.Ext.IfaceAddr.Unmap()
	if !local.Is4() {
		return nil, fmt.Errorf("ipip: interface %s has no IPv4 address to send tunnelled traffic from", b.Ext.Iface.Name)
	}
	underlay := b.Ext.Iface.MTU
	if b.Opts.MTU > 0 {
		underlay = b.Opts.MTU
	}
	dev, err := ensureDevice(b.NL, local, underlay-overhead)
	if err != nil {
		return nil, err
	}
	klog.Infof("ipip: %s local %s MTU %d, DirectRouting=%v", DeviceName, local, underlay-overhead, b.Opts.DirectRouting)
	return newNetwork(b, backend.NetlinkRoutes{H: b.NL}, dev, local, underlay-overhead, cfg.Network), nil
}

// ensureDevice creates flannel.ipip, or adopts an existing one whose local
// address is right. A kernel without ipip is told apart from other
// failures, since the operator's fix is different.
func ensureDevice(h *netlink.Handle, local netip.Addr, mtu int) (netlink.Link, error) {
	want := &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: DeviceName, MTU: mtu}, Local: net.IP(local.AsSlice())}
	if l, err := h.LinkByName(DeviceName); err == nil {
		t, ok := l.(*netlink.Iptun)
		if ok && t.Local.Equal(want.Local) && (t.Remote == nil || t.Remote.IsUnspecified()) {
			return l, setUp(h, l, mtu)
		}
		klog.Warningf("ipip: %s exists with other settings (type %s); re-creating it", DeviceName, l.Type())
		if err := h.LinkDel(l); err != nil {
			return nil, fmt.Errorf("ipip: delete mismatched %s: %w", DeviceName, err)
		}
	}
	if err := h.LinkAdd(want); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP) {
			return nil, fmt.Errorf("ipip: this kernel lacks ipip support (creating %s: %v): load the module with `modprobe ipip` "+
				"(kernel option CONFIG_NET_IPIP), or choose another backend such as vxlan", DeviceName, err)
		}
		return nil, fmt.Errorf("ipip: create %s: %w", DeviceName, err)
	}
	l, err := h.LinkByName(DeviceName)
	if err != nil {
		return nil, fmt.Errorf("ipip: look up %s: %w", DeviceName, err)
	}
	return l, setUp(h, l, mtu)
}

func setUp(h *netlink.Handle, l netlink.Link, mtu int) error {
	if l.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("ipip: ip link set %s mtu %d: %w", DeviceName, mtu, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("ipip: ip link set %s up: %w", DeviceName, err)
	}
	return nil
}

type network struct {
	b       *Backend
	local   netip.Addr // the external interface's address, the tunnel's source
	mtu     int
	cluster netip.Prefix
	// dev is flannel.ipip as last seen; the healer re-creates it when it
	// is deleted. Read and written under the peers' lock.
	dev    netlink.Link
	own    netip.Prefix
	routes *backend.Routes
	set    *backend.PeerSet[peer]
	table  *backend.RouteTable[peer]
	peers  *backend.Peers
}

// newNetwork programs routes through kernel (netlink on b.NL; a fake in
// tests).
func newNetwork(b *Backend, kernel backend.RouteKernel, dev netlink.Link, local netip.Addr, mtu int, cluster netip.Prefix) *network {
	links := map[int]string{dev.Attrs().Index: DeviceName}
	if b.Opts.DirectRouting {
		links[b.Ext.Iface.Index] = b.Ext.Iface.Name
	}
	n := &network{b: b, dev: dev, local: local, mtu: mtu, cluster: cluster}
	n.routes = backend.NewRoutes(kernel, cluster, links)
	n.table = backend.NewRouteTable(n.routeFor, n.routes)
	n.set = backend.NewPeerSet("ipip", n.table)
	n.peers = backend.NewPeers(backend.PeersConfig{Name: "ipip", Sets: []backend.PeerEngine{n.set}, Owned: n.owned, Check: n.repairDevice})
	return n
}

// owned is what the healer watches: the device (by its index now, and by
// name to see it re-created), the external interface, and routes into the
// network that differ from what the peers want.
func (n *network) owned() *backend.Owned {
	return &backend.Owned{
		Devices: map[int]bool{n.dev.Attrs().Index: true}, Names: map[string]bool{DeviceName: true},
		Ext: n.b.Ext.Iface.Index, Networks: []netip.Prefix{n.cluster},
		RouteInLine: func(u netlink.RouteUpdate) bool { return backend.RouteInLine(n.table, u) },
	}
}

func (n *network) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: TypeName} }

func (n *network) MTU() int { return n.mtu }

// Transport is IP-in-IP's protocol number; there is no port.
func (n *network) Transport() string { return "IP protocol 4 (IPIP)" }

// Activate gives the device the subnet's network address as a /32: the
// source address of traffic the node itself sends to other nodes' pods.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	var err error
	n.peers.Locked(func() {
		n.own = own.Subnet
		n.routes.SetOwn(own.Subnet)
		_, err = n.ensureAddress()
	})
	return err
}

// ensureAddress gives the device the subnet's network address as a /32
// unless it has it, and says whether it had to.
func (n *network) ensureAddress() (bool, error) {
	host := netip.PrefixFrom(n.own.Addr(), 32)
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return n.b.NL.AddrList(n.dev, netlink.FAMILY_V4) })
	if err != nil {
		return false, fmt.Errorf("ipip: ip addr show dev %s: %w", DeviceName, err)
	}
	for _, a := range addrs {
		if p, ok := ipnet.Prefix(a.IPNet); ok && p == host {
			return false, nil
		}
	}
	if err := n.b.NL.AddrReplace(n.dev, &netlink.Addr{IPNet: ipnet.FromPrefix(host)}); err != nil {
		return false, fmt.Errorf("ipip: ip addr add %s dev %s: %w", host, DeviceName, err)
	}
	return true, nil
}
