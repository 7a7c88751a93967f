package wireguard

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
)

// tunnel is one device and the peers programmed on it. It carries IPv4,
// IPv6 or both.
type tunnel struct {
	n      *network
	dev    device
	port   int
	v4, v6 bool

	peers map[string]peer // by lease key: what the device holds now
	watch map[wgtypes.Key]*handshakeWatch
}

// peer is one remote node on a tunnel. Comparable, so a change is
// detected with ==.
type peer struct {
	key      wgtypes.Key
	endpoint netip.AddrPort
	allowed  string // comma-separated prefixes, for comparison and logs
}

func (t *tunnel) activate(own *lease.Lease) error {
	if t.v4 {
		if !own.Subnet.IsValid() {
			return fmt.Errorf("wireguard: own lease %s has no IPv4 subnet", own.Key())
		}
		if err := backend.ConfigureTunnel(t.n.b.NL, t.dev.Name(), own.Subnet.Masked().Addr(), t.n.cfg.Network); err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
	}
	if t.v6 {
		if !own.IPv6Subnet.IsValid() {
			return fmt.Errorf("wireguard: own lease %s has no IPv6 subnet", own.Key())
		}
		if err := backend.ConfigureTunnel(t.n.b.NL, t.dev.Name(), own.IPv6Subnet.Masked().Addr(), t.n.cfg.IPv6Network); err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
	}
	return nil
}

func (t *tunnel) handle(ev lease.Event) {
	key := ev.Lease.Key()
	if ev.Type == lease.Removed {
		if old, had := t.peers[key]; had {
			t.remove(key, old)
			klog.Infof("wireguard: %s: removed peer %s (%s, public key %s)", t.dev.Name(), old.allowed, old.endpoint, old.key)
		}
		return
	}
	p, err := t.peerFor(&ev.Lease)
	if err != nil {
		klog.Errorf("wireguard: %s: cannot add peer %s: %v", t.dev.Name(), ev.Lease.String(), err)
		if old, had := t.peers[key]; had {
			t.remove(key, old)
		}
		return
	}
	old, had := t.peers[key]
	if had && old == p {
		return
	}
	if had && old.key != p.key {
		t.remove(key, old) // the node restarted with a new key
		had = false
	}
	if err := t.dev.Configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{t.peerConfig(p)}}); err != nil {
		klog.Errorf("wireguard: %s: add peer %s at %s: %v", t.dev.Name(), p.allowed, p.endpoint, err)
		delete(t.peers, key)
		return
	}
	t.peers[key] = p
	if !had {
		if err := t.dev.Greet(p.key, *t.n.b.Opts.keepalive()); err != nil {
			klog.V(1).Infof("wireguard: %s: greet peer %s: %v", t.dev.Name(), p.allowed, err)
		}
	}
	klog.Infof("wireguard: %s: peer %s at %s, public key %s", t.dev.Name(), p.allowed, p.endpoint, p.key)
}

func (t *tunnel) peerConfig(p peer) wgtypes.PeerConfig {
	pc := wgtypes.PeerConfig{
		PublicKey: p.key, PresharedKey: t.n.b.Opts.psk, Endpoint: net.UDPAddrFromAddrPort(p.endpoint),
		PersistentKeepaliveInterval: t.n.b.Opts.keepalive(), ReplaceAllowedIPs: true,
	}
	for _, s := range strings.Split(p.allowed, ",") {
		pc.AllowedIPs = append(pc.AllowedIPs, *backend.IPNet(netip.MustParsePrefix(s)))
	}
	return pc
}

func (t *tunnel) remove(key string, p peer) {
	delete(t.peers, key)
	delete(t.watch, p.key)
	err := t.dev.Configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: p.key, Remove: true}}})
	if err != nil {
		klog.Errorf("wireguard: %s: remove peer %s (public key %s): %v", t.dev.Name(), p.allowed, p.key, err)
	}
}

// peerFor reads a lease: its key, the subnets this tunnel carries, and the
// address to reach it at.
func (t *tunnel) peerFor(l *lease.Lease) (peer, error) {
	if l.Attrs.BackendType != TypeName {
		return peer{}, fmt.Errorf("it uses backend %q; every node of a network must use the same backend", l.Attrs.BackendType)
	}
	data := l.Attrs.BackendData
	if t.v6 && !t.v4 || len(data) == 0 {
		data = l.Attrs.BackendV6Data
	}
	key, err := decodeLeaseData(data)
	if err != nil {
		return peer{}, err
	}
	var allowed []string
	if t.v4 {
		if !l.Subnet.IsValid() {
			return peer{}, fmt.Errorf("lease has no IPv4 subnet; a dual-stack network needs both on every node")
		}
		allowed = append(allowed, l.Subnet.Masked().String())
	}
	if t.v6 {
		if !l.IPv6Subnet.IsValid() {
			return peer{}, fmt.Errorf("lease has no IPv6 subnet; a dual-stack network needs both on every node")
		}
		allowed = append(allowed, l.IPv6Subnet.Masked().String())
	}
	addr, err := t.endpoint(l.Attrs.PublicIP.Unmap(), l.Attrs.PublicIPv6)
	if err != nil {
		return peer{}, err
	}
	return peer{key: key, endpoint: netip.AddrPortFrom(addr, uint16(t.port)), allowed: strings.Join(allowed, ",")}, nil
}

// endpoint is the peer address for this tunnel: its family's in Mode
// separate, the Mode's family in ipv4/ipv6, and in auto the one likelier to
// connect, as upstream chooses: IPv4 unless it is private and the peer and
// this node both have a non-private IPv6 address.
func (t *tunnel) endpoint(ip4, ip6 netip.Addr) (netip.Addr, error) {
	has4, has6 := ip4.Is4(), ip6.Is6() && !ip6.Is4In6()
	mode := t.n.b.Opts.Mode
	want6 := false
	switch {
	case mode == Separate:
		want6 = t.v6 && !t.v4
	case mode == IPv6:
		want6 = true
	case mode == Auto:
		local6 := t.n.b.Ext.ExtV6Addr
		want6 = !has4 || (has6 && ip4.IsPrivate() && !ip6.IsPrivate() && local6.Is6() && !local6.IsPrivate())
	}
	if want6 {
		if !has6 {
			return netip.Addr{}, fmt.Errorf("lease has no PublicIPv6 to reach it at")
		}
		return ip6, nil
	}
	if !has4 {
		return netip.Addr{}, fmt.Errorf("lease has no IPv4 PublicIP to reach it at")
	}
	return ip4, nil
}

// reconcile removes peers the device holds that no lease accounts for.
func (t *tunnel) reconcile() {
	have, err := t.dev.Peers()
	if err != nil {
		klog.Errorf("wireguard: %s: list peers: %v", t.dev.Name(), err)
		return
	}
	keep := map[wgtypes.Key]bool{}
	for _, p := range t.peers {
		keep[p.key] = true
	}
	for _, p := range have {
		if keep[p.PublicKey] {
			continue
		}
		klog.Infof("wireguard: %s: removing stale peer %s", t.dev.Name(), p.PublicKey)
		if err := t.dev.Configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: p.PublicKey, Remove: true}}}); err != nil {
			klog.Errorf("wireguard: %s: remove stale peer %s: %v", t.dev.Name(), p.PublicKey, err)
		}
	}
}
