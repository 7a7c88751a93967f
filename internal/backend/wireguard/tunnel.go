package wireguard

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/lease"
)

// tunnel is one device and the peers programmed on it. It carries IPv4,
// IPv6 or both. Its peers are kept by lease key in the shared engine,
// whose one Table is the device's peer list.
type tunnel struct {
	n      *network
	dev    device
	port   int
	v4, v6 bool

	// Under the network's lock:
	index int // the device's kernel index, once activated
	// regreet, set from a re-creation of the device until the next
	// reconcile, makes every peer put back greeted: none has a session.
	regreet bool
	set     *backend.PeerSet[peer]
	peerT   *backend.Table[peer, wgtypes.Key, peer]
	watch   map[wgtypes.Key]*handshakeWatch
}

func newTunnel(n *network, dev device, port int, v4, v6 bool) *tunnel {
	t := &tunnel{n: n, dev: dev, port: port, v4: v4, v6: v6, watch: map[wgtypes.Key]*handshakeWatch{}}
	t.peerT = backend.NewTable("peer", func(p peer) (wgtypes.Key, peer, bool) { return p.key, p, true }, devicePeers{t})
	t.set = backend.NewPeerSet("wireguard: "+dev.Name(), t.peerT)
	return t
}

// peer is one remote node on a tunnel. Comparable, so a change is
// detected with ==.
type peer struct {
	key      wgtypes.Key
	endpoint netip.AddrPort
	allowed  string // sorted, comma-separated prefixes, for comparison and logs
}

func (p peer) String() string {
	return fmt.Sprintf("peer %s at %s, public key %s", p.allowed, p.endpoint, p.key)
}

// repair re-creates the device if it was deleted, gives it its
// addresses, up state and the networks' routes, as far as they are
// missing, and records its index.
func (t *tunnel) repair(own *lease.Lease, r backend.Repairs) error {
	t.regreet = false
	for _, f := range []struct {
		on      bool
		subnet  netip.Prefix
		network netip.Prefix
		name    string
	}{{t.v4, own.Subnet, t.n.cfg.Network, "IPv4"}, {t.v6, own.IPv6Subnet, t.n.cfg.IPv6Network, "IPv6"}} {
		if !f.on {
			continue
		}
		if !f.subnet.IsValid() {
			return fmt.Errorf("wireguard: own lease %s has no %s subnet", own.Key(), f.name)
		}
		index, err := backend.RepairTunnel(t.n.b.NL, t.dev.Name(), f.subnet.Masked().Addr(), f.network, r, t.recreate)
		if err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
		t.index = index
	}
	return nil
}

// recreate makes a deleted device again with the node's key and port
// (backend.RepairTunnel calls it); the engine's reconcile that follows
// puts the peers back, and the peers' sessions start again with a
// handshake.
func (t *tunnel) recreate() error {
	klog.Warningf("wireguard: %s was deleted; creating it again (%s)", t.dev.Name(), t.dev.Kind())
	if err := t.dev.Recreate(t.n.mtu); err != nil {
		return err
	}
	if err := t.dev.Configure(wgtypes.Config{PrivateKey: &t.n.key, ListenPort: &t.port, ReplacePeers: true}); err != nil {
		return fmt.Errorf("configure the new device (private key, listen port %d): %w", t.port, err)
	}
	t.regreet = true
	// The new device counts its traffic from zero: the handshake watch
	// starts afresh too.
	clear(t.watch)
	return nil
}

// handle applies one event; a new peer (or a node with a new key) is
// greeted.
func (t *tunnel) handle(ev lease.Event) {
	old, had := t.set.Get(ev.Lease.Key())
	p, ok := t.set.Handle(ev, t.peerFor)
	if ok && (!had || old.key != p.key) {
		if err := t.dev.Greet(p.key, *t.n.b.Opts.keepalive()); err != nil {
			klog.V(1).Infof("wireguard: %s: greet peer %s: %v", t.dev.Name(), p.allowed, err)
		}
	}
}

func (t *tunnel) peerConfig(p peer) wgtypes.PeerConfig {
	pc := wgtypes.PeerConfig{
		PublicKey: p.key, PresharedKey: t.n.b.Opts.psk, Endpoint: net.UDPAddrFromAddrPort(p.endpoint),
		PersistentKeepaliveInterval: t.n.b.Opts.keepalive(), ReplaceAllowedIPs: true,
	}
	for _, s := range strings.Split(p.allowed, ",") {
		pc.AllowedIPs = append(pc.AllowedIPs, *ipnet.FromPrefix(netip.MustParsePrefix(s)))
	}
	return pc
}

// devicePeers is the EntryWriter of a tunnel's peer list, on the device
// (kernel or userspace) by public key.
type devicePeers struct{ t *tunnel }

func (w devicePeers) Set(_ wgtypes.Key, p peer) error {
	if err := w.t.dev.Configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{w.t.peerConfig(p)}}); err != nil {
		return err
	}
	if w.t.regreet {
		if err := w.t.dev.Greet(p.key, *w.t.n.b.Opts.keepalive()); err != nil {
			klog.V(1).Infof("wireguard: %s: greet peer %s: %v", w.t.dev.Name(), p.allowed, err)
		}
	}
	return nil
}

func (w devicePeers) Delete(k wgtypes.Key, _ peer) error {
	delete(w.t.watch, k)
	return w.t.dev.Configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: k, Remove: true}}})
}

// Same compares the allowed IPs: the endpoint is where the peer was last
// heard from, which WireGuard itself updates when a peer roams.
func (w devicePeers) Same(want, have peer) bool { return want.allowed == have.allowed }

func (w devicePeers) Describe(k wgtypes.Key, p peer) string {
	return fmt.Sprintf("%s allowed-ips %s endpoint %s on %s", k, p.allowed, p.endpoint, w.t.dev.Name())
}

// Visit lists the device's peers; every peer on a flannel device is
// flannel's.
func (w devicePeers) Visit(reset func(), f func(wgtypes.Key, peer, bool)) error {
	have, err := w.t.dev.Peers()
	if err != nil {
		return err
	}
	reset()
	for _, p := range have {
		var allowed []string
		for _, a := range p.AllowedIPs {
			if pfx, ok := ipnet.Prefix(&a); ok {
				allowed = append(allowed, pfx.Masked().String())
			}
		}
		var ep netip.AddrPort
		if p.Endpoint != nil {
			ep = p.Endpoint.AddrPort()
		}
		f(p.PublicKey, peer{key: p.PublicKey, endpoint: ep, allowed: joinSorted(allowed)}, true)
	}
	return nil
}

func joinSorted(s []string) string {
	slices.Sort(s)
	return strings.Join(s, ",")
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
	return peer{key: key, endpoint: netip.AddrPortFrom(addr, uint16(t.port)), allowed: joinSorted(allowed)}, nil
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
