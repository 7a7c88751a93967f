// Package ipsec is the ipsec backend: IKEv2 with a pre-shared key through
// strongSwan's charon, which flanneld runs and drives over VICI, and one
// tunnel-mode child SA per peer subnet. Where the kernel has no ESP
// (micro-VMs, hardened kernels, this project's CI machines), charon's
// kernel-libipsec plugin does ESP in userspace on a TUN device; the choice
// is automatic and logged.
package ipsec

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

const (
	// TypeName is the Backend "Type" this package serves.
	TypeName = "ipsec"
	// DefaultESPProposal is upstream's default.
	DefaultESPProposal = "aes128gcm16-sha256-prfsha256-ecp256"
	// minPSKLength is upstream's minimum.
	minPSKLength = 96
	// overhead is upstream's figure for tunnel-mode ESP: outer IP 20, SPI
	// and sequence 8, IV 16, padding up to 15, trailer 2, ICV 16.
	overhead = 77
	// udpEncapOverhead is the UDP header of ESP-in-UDP (NAT traversal).
	udpEncapOverhead = 8
	// RunDirEnv names the directory for charon's configuration, VICI
	// socket and runtime files.
	RunDirEnv     = "FLANNEL_IPSEC_DIR"
	defaultRunDir = "/var/lib/flannel/ipsec"
)

// Options are upstream's ipsec keys of net-conf.json's Backend object.
type Options struct {
	PSK         string
	UDPEncap    bool
	ESPProposal string
	// MTU is the underlay MTU, as for every backend; 0: the interface's.
	MTU int
}

func parseOptions(raw json.RawMessage) (Options, error) {
	o := Options{ESPProposal: DefaultESPProposal}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return o, fmt.Errorf("ipsec backend config: %w", err)
		}
	}
	if len(o.PSK) < minPSKLength {
		return o, fmt.Errorf("ipsec backend config: PSK is %d characters long; it must have at least %d "+
			"(for example: head -c 72 /dev/urandom | base64 -w0)", len(o.PSK), minPSKLength)
	}
	return o, nil
}

// Backend is an ipsec backend bound to one external interface.
type Backend struct {
	ext  *backend.ExternalInterface
	opts Options
}

// New is the backend.Factory for "ipsec".
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	opts, err := parseOptions(raw)
	if err != nil {
		return nil, err
	}
	if ext == nil || ext.Iface == nil {
		return nil, fmt.Errorf("ipsec: no external interface")
	}
	return &Backend{ext: ext, opts: opts}, nil
}

// RegisterNetwork starts charon, in userspace-ESP mode when the kernel
// cannot do ESP.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 || cfg.EnableIPv6 {
		return nil, fmt.Errorf("ipsec: the network must be IPv4 only")
	}
	if !b.ext.ExtAddr.IsValid() {
		return nil, fmt.Errorf("ipsec: no IPv4 public address on %s", b.ext.Iface.Name)
	}
	userspace := !kernelHasESP()
	encap := b.opts.UDPEncap
	if userspace {
		klog.Infof("ipsec: this kernel cannot do ESP (no esp4 module or no AES-GCM); ESP runs in userspace in charon's kernel-libipsec, always UDP-encapsulated")
		encap = true
	}
	dir := os.Getenv(RunDirEnv)
	if dir == "" {
		dir = defaultRunDir
	}
	ch, err := startCharon(ctx, dir, userspace)
	if err != nil {
		return nil, err
	}
	underlay := b.ext.Iface.MTU
	if b.opts.MTU > 0 {
		underlay = b.opts.MTU
	}
	mtu := underlay - overhead
	if encap {
		mtu -= udpEncapOverhead
	}
	n := &network{ch: ch, opts: b.opts, encap: encap, mtu: mtu, self: b.ext.ExtAddr.String(), peers: map[string]*lease.Lease{}}
	if userspace {
		if n.tun, err = newTunRoutes(); err != nil {
			return nil, err
		}
		if dev := n.tun.mtu(); dev < n.mtu {
			klog.Infof("ipsec: pods get MTU %d, the MTU of charon's %s (%d after ESP and UDP overhead on the underlay)", dev, libipsecDevice, n.mtu)
			n.mtu = dev
		}
	}
	return n, nil
}

type network struct {
	ch    *charon
	opts  Options
	encap bool
	mtu   int
	self  string

	// tun routes peers' subnets into charon's ESP device in userspace
	// mode; nil when the kernel does ESP.
	tun *tunRoutes

	mu    sync.Mutex
	own   *lease.Lease
	peers map[string]*lease.Lease // loaded connections by lease key
}

func (n *network) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: TypeName} }

func (n *network) MTU() int { return n.mtu }

// Transport is what IKE and ESP need between the nodes.
func (n *network) Transport() string {
	if n.encap {
		return "UDP 500 and 4500 (IPsec, ESP in UDP)"
	}
	return "UDP 500 and 4500 and IP protocol 50 (IPsec ESP)"
}

// Activate loads the PSK for this node's own address. In userspace mode
// ipsec0 gets the subnet's network address, as flannel.1 does in VXLAN:
// charon routes a child SA only from an address inside its local subnet,
// and the node has none until its first pod starts.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	n.mu.Lock()
	n.own = own
	n.mu.Unlock()
	if err := n.tun.setSource(own.Subnet); err != nil {
		return err
	}
	return n.ch.loadPSK(ctx, n.self, n.opts.PSK)
}

// HandleEvents loads a connection per new peer and unloads (and closes)
// the connection of a peer that left. A failure is logged and retried with
// that peer's next event.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range events {
		l := ev.Lease
		key := l.Key()
		if ev.Type == lease.Removed {
			if old := n.peers[key]; old != nil {
				delete(n.peers, key)
				if err := n.ch.unloadConn(ctx, connName(n.own, old)); err != nil {
					klog.Errorf("ipsec: unload connection to %s: %v", old, err)
				}
				n.tun.remove(old.Subnet)
			}
			continue
		}
		if l.Attrs.BackendType != TypeName || !l.Subnet.IsValid() || !l.Attrs.PublicIP.IsValid() {
			klog.Errorf("ipsec: ignoring peer %s: it uses backend %q (every node must use ipsec) or lacks a subnet or PublicIP", &l, l.Attrs.BackendType)
			continue
		}
		if err := n.connect(ctx, &l); err != nil {
			klog.Errorf("ipsec: connect to peer %s: %v", &l, err)
			continue
		}
		n.peers[key] = &l
	}
}

func (n *network) connect(ctx context.Context, peer *lease.Lease) error {
	if err := n.tun.add(peer.Subnet); err != nil {
		return err
	}
	if err := n.ch.loadPSK(ctx, peer.Attrs.PublicIP.String(), n.opts.PSK); err != nil {
		return err
	}
	return n.ch.loadConn(ctx, connSpec{
		name: connName(n.own, peer), local: n.self, remote: peer.Attrs.PublicIP.String(),
		localTS: n.own.Subnet.String(), remoteTS: peer.Subnet.String(),
		espProposal: n.opts.ESPProposal, encap: n.encap,
	})
}

// connName is upstream's connection name: both addresses and subnets.
func connName(own, peer *lease.Lease) string {
	return fmt.Sprintf("%s-%s-%s-%s", own.Attrs.PublicIP, own.Subnet, peer.Subnet, peer.Attrs.PublicIP)
}
