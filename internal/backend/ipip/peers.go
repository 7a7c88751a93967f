package ipip

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
)

// peer is what one remote lease asks for: its subnet, reached through its
// public address, either inside the tunnel or, with DirectRouting and a
// peer on this node's segment, as a plain route. The device is not part
// of it: a re-created flannel.ipip has a new index, and every peer's
// route follows.
type peer struct {
	subnet netip.Prefix
	gw     netip.Addr
	direct bool
}

func (p peer) String() string {
	if p.direct {
		return fmt.Sprintf("%s via %s (direct)", p.subnet, p.gw)
	}
	return fmt.Sprintf("%s via %s", p.subnet, p.gw)
}

// HandleEvents installs, replaces and removes peer routes on flannel.ipip
// (or, with DirectRouting, the external interface); see backend.Peers.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.peers.Apply(events, n.handle)
}

func (n *network) handle(ev lease.Event) { n.set.Handle(ev, n.peerFor) }

// peerFor checks a lease and says whether DirectRouting reaches it
// without the tunnel.
func (n *network) peerFor(l *lease.Lease) (peer, error) {
	if l.Attrs.BackendType != TypeName || !l.Subnet.IsValid() || !l.Attrs.PublicIP.Unmap().Is4() {
		return peer{}, fmt.Errorf("it uses backend %q (every node must use ipip) or has no IPv4 subnet and PublicIP", l.Attrs.BackendType)
	}
	gw := l.Attrs.PublicIP.Unmap()
	direct := n.b.Opts.DirectRouting && backend.CheckOnSegment(n.b.NL, n.b.Ext.Iface.Index, gw) == nil
	return peer{subnet: l.Subnet, gw: gw, direct: direct}, nil
}

// routeFor is "<subnet> via <peer> dev flannel.ipip onlink", or for a
// direct peer "<subnet> via <peer> dev <ext>".
func (n *network) routeFor(p peer) (backend.PeerRoute, bool) {
	if p.direct {
		return backend.PeerRoute{Dst: p.subnet, Gw: p.gw, Link: n.b.Ext.Iface.Index}, true
	}
	return backend.PeerRoute{Dst: p.subnet, Gw: p.gw, Link: n.dev.Attrs().Index, Onlink: true}, true
}

// Heal keeps flannel.ipip and every peer's route in place; see
// backend.Healer.
func (n *network) Heal(ctx context.Context, cfg backend.HealConfig) { n.peers.Heal(ctx, cfg, n.b.ns) }

// repairDevice re-creates flannel.ipip when it is gone or was replaced,
// brings it up and gives it back its address; the peers' routes follow
// the new device. Run under the peers' lock, before their repair.
func (n *network) repairDevice(r backend.Repairs) error {
	l, err := n.b.NL.LinkByName(DeviceName)
	if err != nil || l.Attrs().Index != n.dev.Attrs().Index {
		klog.Warningf("ipip: %s is gone or was replaced; re-creating it", DeviceName)
		if l, err = ensureDevice(n.b.NL, n.local, n.mtu); err != nil {
			return err
		}
		n.adopt(l)
		r.Add("device")
	} else if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().MTU != n.mtu {
		if err := setUp(n.b.NL, l, n.mtu); err != nil {
			return err
		}
		n.dev = l
		r.Add("device")
	}
	if !n.own.IsValid() {
		return nil // not activated yet
	}
	added, err := n.ensureAddress()
	if added {
		r.Add("address")
	}
	return err
}

// adopt makes l the device every tunnelled peer's route goes out of; the
// next repair writes them there.
func (n *network) adopt(l netlink.Link) {
	n.routes.Relink(n.dev.Attrs().Index, l.Attrs().Index)
	n.dev = l
	n.set.Rebuild()
}
