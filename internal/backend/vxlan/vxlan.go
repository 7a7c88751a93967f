// Package vxlan is the VXLAN backend: one flannel.<VNI> device (and, with
// IPv6, one flannel-v6.<VNI> device) per node and, for each peer, a route, a
// permanent neighbour and an FDB entry, laid out exactly as upstream
// flanneld does so that both interoperate.
package vxlan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/lease"
)

// TypeName is the Backend "Type" this package serves.
const TypeName = "vxlan"

// Backend is a VXLAN backend bound to one external interface.
type Backend struct {
	ext  *backend.ExternalInterface
	opts Options
	nl   *netlink.Handle
	ns   *netns.NsHandle // where nl works, for netlink notifications and dumps; nil: here
	// resumeMAC is the VTEP MAC per family (v4, v6) this node published
	// last time, for a device that has to be created (Resume).
	resumeMAC [2]net.HardwareAddr
}

// WatchNamespace names the network namespace nl is bound to, so that the
// healer subscribes to that namespace's netlink notifications.
func (b *Backend) WatchNamespace(ns netns.NsHandle) { b.ns = &ns }

// New is the backend.Factory for "vxlan"; it works in the process's current
// network namespace.
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	return NewWithHandle(nil, nil, ext, raw)
}

// NewWithHandle builds the backend on a given netlink handle bound to
// network namespace ns, for example another one than the process's (nil,
// nil: a new handle in the current namespace). The namespace is needed as
// well because the reconcile reads neighbours on sockets of its own.
func NewWithHandle(h *netlink.Handle, ns *netns.NsHandle, ext *backend.ExternalInterface, raw json.RawMessage) (*Backend, error) {
	opts, err := parseOptions(raw)
	if err != nil {
		return nil, err
	}
	h, err = backend.OpenUnderlay("vxlan", ext, h)
	if err != nil {
		return nil, err
	}
	return &Backend{ext: ext, opts: opts, nl: h, ns: ns}, nil
}

// RegisterNetwork creates (or adopts) flannel.<VNI> when the network has
// IPv4 and flannel-v6.<VNI> when it has IPv6. Each device sends from the
// external interface's address of its own family. Both devices are checked
// before either is touched.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return nil, fmt.Errorf("vxlan: the network enables neither IPv4 nor IPv6")
	}
	var specs []deviceSpec
	if cfg.EnableIPv4 {
		s, err := b.spec(false)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if cfg.EnableIPv6 {
		s, err := b.spec(true)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	n := &network{b: b}
	for _, spec := range specs {
		dev, err := ensureDevice(b.nl, spec)
		if err != nil {
			return nil, fmt.Errorf("vxlan: %w", err)
		}
		spec.mac = dev.HardwareAddr
		if spec.srcAddr.Is6() {
			n.v6 = newStack(b, dev, spec, cfg.IPv6Network)
		} else {
			n.v4 = newStack(b, dev, spec, cfg.Network)
		}
	}
	var sets []backend.PeerEngine
	for _, s := range n.stacks() {
		sets = append(sets, s.set)
	}
	n.peers = backend.NewPeers(backend.PeersConfig{Name: "vxlan", Sets: sets, Owned: n.owned, Check: n.check})
	return n, nil
}

// spec is the device one address family needs, with its MTU: the underlay
// MTU (the Backend MTU key when set, as upstream reads it, else the external
// interface's MTU) less the encapsulation overhead.
func (b *Backend) spec(v6 bool) (deviceSpec, error) {
	name, src, overhead, family := fmt.Sprintf("flannel.%d", b.opts.VNI), b.ext.IfaceAddr.Unmap(), overheadV4, "IPv4"
	if v6 {
		name, src, overhead, family = fmt.Sprintf("flannel-v6.%d", b.opts.VNI), b.ext.IfaceV6Addr, overheadV6, "IPv6"
	}
	if !src.IsValid() || src.Is6() != v6 || src.Is4In6() {
		return deviceSpec{}, fmt.Errorf("vxlan: interface %s has no %s address to send %s VXLAN traffic from; add one or choose another interface with --iface",
			b.ext.Iface.Name, family, family)
	}
	underlay, from := b.ext.Iface.MTU, "the MTU of "+b.ext.Iface.Name
	if b.opts.MTU > 0 {
		underlay, from = b.opts.MTU, "the Backend MTU key"
	}
	mtu := underlay - overhead
	if v6 && mtu < minMTUv6 {
		return deviceSpec{}, fmt.Errorf("vxlan: MTU %d for %s (underlay MTU %d from %s, less %d bytes of VXLAN over IPv6) is below the IPv6 minimum of %d; raise the underlay MTU to at least %d",
			mtu, name, underlay, from, overhead, minMTUv6, minMTUv6+overhead)
	}
	return deviceSpec{
		name: name, vni: b.opts.VNI, port: b.opts.Port,
		vtepDev: b.ext.Iface.Index, srcAddr: src,
		learning: b.opts.Learning, gbp: b.opts.GBP, mtu: mtu,
		noTxChecksum: b.opts.DisableTxChecksumOffload,
		mac:          b.resumeMAC[boolIndex(v6)],
	}, nil
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Resume takes the VTEP MACs from the BackendData this node published in
// its last run (Kubernetes: the backend-data and backend-v6-data
// annotations). A device that has to be created (after a reboot) gets that
// MAC again, so the FDB entries the peers hold for this node stay valid and
// no peer has to re-program anything; a device that survived keeps its own.
// A missing or unusable MAC is ignored: the kernel picks a new one.
func (b *Backend) Resume(v4, v6 json.RawMessage) {
	for i, raw := range []json.RawMessage{v4, v6} {
		if len(raw) == 0 {
			continue
		}
		mac, err := publishedMAC(raw)
		if err != nil {
			klog.Warningf("vxlan: not reusing the VTEP MAC this node published last time: %v", err)
			continue
		}
		b.resumeMAC[i] = mac
	}
}

// publishedMAC is the VtepMAC of a BackendData value, when it is one a
// device can have (a unicast Ethernet address).
func publishedMAC(raw json.RawMessage) (net.HardwareAddr, error) {
	var d struct{ VtepMAC string }
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("BackendData %s: %w", raw, err)
	}
	if d.VtepMAC == "" {
		return nil, fmt.Errorf("BackendData %s has no VtepMAC", raw)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 || mac.String() == "00:00:00:00:00:00" {
		return nil, fmt.Errorf("VtepMAC %q in BackendData is not a unicast Ethernet address", d.VtepMAC)
	}
	return mac, nil
}

type network struct {
	b      *Backend
	v4, v6 *stack // nil when the network lacks that family
	peers  *backend.Peers
}

func (n *network) stacks() []*stack {
	var out []*stack
	for _, s := range []*stack{n.v4, n.v6} {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Transport is the VXLAN UDP port this network's devices use.
func (n *network) Transport() string {
	return fmt.Sprintf("UDP %d (VXLAN)", effectivePort(n.b.opts.Port))
}

// MTU is the smaller of the two devices' MTUs in dual stack: pods get one
// MTU for both families.
func (n *network) MTU() int {
	mtu := 0
	for _, s := range n.stacks() {
		if mtu == 0 || s.mtu < mtu {
			mtu = s.mtu
		}
	}
	return mtu
}

func (n *network) LeaseAttrs() lease.Attrs {
	a := lease.Attrs{BackendType: TypeName}
	if n.v4 != nil {
		a.BackendData = n.v4.leaseData()
	}
	if n.v6 != nil {
		a.BackendV6Data = n.v6.leaseData()
	}
	return a
}

// Activate gives each device its subnet's network address as a host
// prefix, the source address of traffic the node itself sends into the
// overlay.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	var err error
	n.peers.Locked(func() {
		for _, s := range n.stacks() {
			if err = s.activate(own); err != nil {
				err = fmt.Errorf("vxlan: %w", err)
				return
			}
		}
	})
	return err
}

// HandleEvents programs and removes peers; see backend.Peers.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.peers.Apply(events, func(ev lease.Event) {
		for _, s := range n.stacks() {
			s.handle(ev)
		}
	})
}

// Heal keeps the devices and every peer's route, neighbour and FDB entry in
// place; see backend.Healer.
func (n *network) Heal(ctx context.Context, cfg backend.HealConfig) { n.peers.Heal(ctx, cfg, n.b.ns) }

// check restores each device before the peers' entries are repaired.
func (n *network) check(r backend.Repairs) error {
	var errs []error
	for _, s := range n.stacks() {
		if err := s.check(r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.family(), err))
		}
	}
	return errors.Join(errs...)
}

// owned tells the healer's notification filter what to watch: the
// devices (whose index changes when one is re-created) and the external
// interface, and routes into the cluster networks; and which of those
// notifications are the echo of the network's own writes.
func (n *network) owned() *backend.Owned {
	o := &backend.Owned{Devices: map[int]bool{}, Names: map[string]bool{}, Ext: n.b.ext.Iface.Index}
	for _, s := range n.stacks() {
		o.Devices[s.dev.Index] = true
		o.Names[s.spec.name] = true
		o.Networks = append(o.Networks, s.network)
	}
	// The filters see the devices as they are now: a re-created device
	// gets a new index, and a new Owned with it after the reconcile.
	type view struct {
		s   *stack
		dev int
	}
	var views [2]view // IPv4, IPv6
	for i, s := range []*stack{n.v4, n.v6} {
		if s != nil {
			views[i] = view{s, s.dev.Index}
		}
	}
	o.RouteInLine = func(u netlink.RouteUpdate) bool {
		dst, ok := ipnet.Prefix(u.Dst)
		if !ok {
			return false
		}
		v := views[0]
		if dst.Addr().Is6() {
			v = views[1]
		}
		return v.s != nil && backend.RouteInLine(v.s.routeT, u)
	}
	o.NeighInLine = func(u netlink.NeighUpdate) bool {
		for _, v := range views {
			if v.s != nil && v.dev == u.LinkIndex && (u.Family == unix.AF_BRIDGE || u.Family == v.s.netlinkFamily()) {
				return v.s.neighInLine(u)
			}
		}
		return false
	}
	return o
}
