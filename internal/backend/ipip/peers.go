package ipip

import (
	"context"
	"net/netip"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/lease"
)

// HandleEvents installs, replaces and removes peer routes on flannel.ipip
// (or, with DirectRouting, the external interface); see backend.Peers.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.peers.Apply(events, n.handle)
}

func (n *network) handle(ev lease.Event) {
	key := ev.Lease.Key()
	if ev.Type == lease.Removed {
		n.routes.Remove(key)
		return
	}
	l := &ev.Lease
	if l.Attrs.BackendType != TypeName || !l.Subnet.IsValid() || !l.Attrs.PublicIP.Unmap().Is4() {
		klog.Errorf("ipip: cannot route to peer %s: it uses backend %q (every node must use ipip) or has no IPv4 subnet and PublicIP",
			l, l.Attrs.BackendType)
		n.routes.Remove(key)
		return
	}
	n.routes.Set(key, n.routeFor(l.Subnet, l.Attrs.PublicIP.Unmap()))
}

// routeFor is "<subnet> via <peer> dev flannel.ipip onlink", or with
// DirectRouting and a peer on our segment "<subnet> via <peer> dev <ext>".
func (n *network) routeFor(subnet netip.Prefix, gw netip.Addr) backend.PeerRoute {
	r := backend.PeerRoute{Dst: subnet, Gw: gw, Link: n.dev.Attrs().Index, Onlink: true}
	if n.b.Opts.DirectRouting && backend.CheckOnSegment(n.b.NL, n.b.Ext.Iface.Index, gw) == nil {
		r.Link, r.Onlink = n.b.Ext.Iface.Index, false
	}
	return r
}

// Heal keeps every peer's route in place; see backend.Healer. A deleted
// flannel.ipip is not re-created: its routes fail to install and the
// healer says so with back-off until flanneld restarts.
func (n *network) Heal(ctx context.Context, cfg backend.HealConfig) { n.peers.Heal(ctx, cfg, n.b.ns) }
