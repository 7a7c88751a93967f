// Package udp is the udp backend: a TUN device flannel0 whose packets
// flanneld carries to the peer node as the payload of a UDP datagram, one
// raw IP packet per datagram, on port 8285 by default. The wire format is
// upstream flannel's, so nodes of both kinds reach each other's pods.
//
// Upstream moves one packet per system call in a single-threaded C proxy.
// This data path reads and writes batches: the TUN device hands over whole
// TCP segments (IFF_VNET_HDR, segmented here into MTU-sized packets) and
// takes coalesced ones back, and the socket sends and receives with
// sendmmsg/recvmmsg plus UDP GSO/GRO where the kernel has them. Both come
// from wireguard-go's tun and conn packages.
package udp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

const (
	// TypeName is the Backend "Type" this package serves.
	TypeName = "udp"
	// DeviceName is the TUN device, as upstream names it.
	DeviceName = "flannel0"
	// DefaultPort is upstream's default UDP port.
	DefaultPort = 8285
	// overhead is the outer IPv4 (20) and UDP (8) headers.
	overhead = 28
	minMTU   = 576
)

// Options are the udp keys of net-conf.json's Backend object.
type Options struct {
	Port int
	// MTU is the underlay MTU; 0 means the external interface's. The
	// device and the pods get MTU − 28.
	MTU int
}

func parseOptions(raw json.RawMessage) (Options, error) {
	o := Options{Port: DefaultPort}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return o, fmt.Errorf("udp backend config: %w", err)
		}
	}
	switch {
	case o.Port <= 0 || o.Port > 65535:
		return o, fmt.Errorf("udp backend config: Port %d is outside 1..65535", o.Port)
	case o.MTU < 0 || (o.MTU > 0 && o.MTU-overhead < minMTU):
		return o, fmt.Errorf("udp backend config: MTU %d leaves pods less than the IPv4 minimum of %d after the %d-byte encapsulation", o.MTU, minMTU, overhead)
	}
	return o, nil
}

// Backend is a udp backend bound to one external interface.
type Backend struct {
	backend.Tunnel[Options]
}

// New is the backend.Factory for "udp"; it works in the process's current
// network namespace.
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	t, err := backend.NewTunnel("udp", ext, raw, parseOptions)
	if err != nil {
		return nil, err
	}
	return &Backend{t}, nil
}

// RegisterNetwork creates flannel0 and opens the UDP socket, so that a
// port already in use is reported before the lease is taken.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if cfg.EnableIPv6 {
		return nil, fmt.Errorf("udp: the udp backend carries IPv4 only, as upstream's does; use vxlan or wireguard for an IPv6 network")
	}
	if !cfg.EnableIPv4 {
		return nil, fmt.Errorf("udp: the network enables no IPv4")
	}
	if !b.Ext.IfaceAddr.Unmap().Is4() {
		return nil, fmt.Errorf("udp: interface %s has no IPv4 address to send UDP-encapsulated traffic from", b.Ext.Iface.Name)
	}
	underlay := b.Ext.Iface.MTU
	if b.Opts.MTU > 0 {
		underlay = b.Opts.MTU
	}
	mtu := underlay - overhead
	if mtu < minMTU {
		return nil, fmt.Errorf("udp: MTU %d of %s leaves pods %d bytes, below the IPv4 minimum of %d", underlay, b.Ext.Iface.Name, mtu, minMTU)
	}
	dp, err := openDataPath(DeviceName, mtu, uint16(b.Opts.Port))
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	klog.Infof("udp: %s (MTU %d) and UDP port %d open; TUN offloads %v, batches of %d", DeviceName, mtu, b.Opts.Port, dp.offloads(), dp.dev.Load().BatchSize())
	n := &network{b: b, cfg: cfg, mtu: mtu, dp: dp, set: backend.NewPeerSet[peer]("udp")}
	n.peers = backend.NewPeers(backend.PeersConfig{Name: "udp", Sets: []backend.PeerEngine{n.set}, Owned: n.owned, Check: n.repair})
	return n, nil
}

// network keeps the peers by lease key in a PeerSet with no kernel
// entries: a udp peer lives in the data path's table, which flanneld
// alone writes. What the kernel holds (flannel0's address, up state and
// the network's route through it) the healer repairs.
type network struct {
	b   *Backend
	cfg *config.Config
	mtu int
	dp  *dataPath

	// Under the peers' lock:
	own   lease.Lease
	dev   int // flannel0's index, once activated
	set   *backend.PeerSet[peer]
	peers *backend.Peers
}

// LeaseAttrs carries no backend data: peers need only the public address,
// which the daemon fills in.
func (n *network) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: TypeName} }

func (n *network) MTU() int { return n.mtu }

// Transport is the UDP port peers send to.
func (n *network) Transport() string { return fmt.Sprintf("UDP %d (udp backend)", n.b.Opts.Port) }

// Collectors are the data path's counters, for the daemon's registry.
func (n *network) Collectors() []prometheus.Collector { return n.dp.collectors() }

// Activate addresses flannel0, routes the network through it and starts
// moving packets until ctx ends.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	if !own.Subnet.IsValid() {
		return fmt.Errorf("udp: own lease %s has no IPv4 subnet", own.Key())
	}
	var err error
	n.peers.Locked(func() {
		n.own = *own
		err = n.repair(backend.Repairs{})
	})
	if err != nil {
		return err
	}
	n.dp.start(ctx)
	return nil
}

// repair re-creates a deleted flannel0 and gives it its address, up state
// and the network's route, as far as they are missing; under the peers'
// lock.
func (n *network) repair(r backend.Repairs) error {
	if !n.own.Subnet.IsValid() {
		return nil // not activated yet
	}
	reopen := func() error {
		klog.Warningf("udp: %s was deleted; creating it again", DeviceName)
		return n.dp.reopen()
	}
	dev, err := backend.RepairTunnel(n.b.NL, DeviceName, n.own.Subnet.Masked().Addr(), n.cfg.Network, r, reopen)
	if err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	n.dev = dev
	return nil
}

// owned is what the healer watches: flannel0 and the network's route
// through it.
func (n *network) owned() *backend.Owned {
	o := &backend.Owned{Devices: map[int]bool{}, Names: map[string]bool{DeviceName: true}, Ext: -1,
		Networks: []netip.Prefix{n.cfg.Network}, RouteInLine: backend.TunnelRoutesInLine(n.dev, n.cfg.Network)}
	if n.dev > 0 {
		o.Devices[n.dev] = true
	}
	return o
}

// Heal keeps flannel0's address and the network's route in place; see
// backend.Healer.
func (n *network) Heal(ctx context.Context, cfg backend.HealConfig) { n.peers.Heal(ctx, cfg, nil) }

// HandleEvents adds and forgets peers. A removed lease's subnet is dropped
// from the table at once, so its traffic is counted as having no peer
// rather than sent to a node that no longer owns it.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.peers.Apply(events, n.handle)
	n.peers.Locked(func() {
		peers := make([]peer, 0, n.set.Len())
		n.set.Each(func(_ string, p peer) { peers = append(peers, p) })
		n.dp.setPeers(newPeerTable(peers))
	})
}

func (n *network) handle(ev lease.Event) { n.set.Handle(ev, n.peerFor) }

// peerFor checks a lease: upstream's udp leases carry no BackendType, so
// an empty one is accepted too.
func (n *network) peerFor(l *lease.Lease) (peer, error) {
	if t := l.Attrs.BackendType; t != TypeName && t != "" {
		return peer{}, fmt.Errorf("it uses backend %q; every node of a network must use the same backend", t)
	}
	ip := l.Attrs.PublicIP.Unmap()
	if !l.Subnet.IsValid() || !ip.Is4() {
		return peer{}, fmt.Errorf("lease has no IPv4 subnet or PublicIP")
	}
	if !n.cfg.Network.Contains(l.Subnet.Addr()) || l.Subnet.Bits() < n.cfg.Network.Bits() {
		return peer{}, fmt.Errorf("subnet %s is outside the network %s", l.Subnet, n.cfg.Network)
	}
	if l.Subnet.Overlaps(n.own.Subnet) {
		return peer{}, fmt.Errorf("subnet %s overlaps this node's %s", l.Subnet, n.own.Subnet)
	}
	return peer{subnet: l.Subnet.Masked(), addr: ip, port: uint16(n.b.Opts.Port)}, nil
}

// CatalogCollectors are the data path's collectors with nothing counted,
// for the catalog of flanneld's metrics (internal/metrics/catalog).
func CatalogCollectors() []prometheus.Collector { return (&dataPath{}).collectors() }
