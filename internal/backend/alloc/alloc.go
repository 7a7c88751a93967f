// Package alloc is the alloc backend: the node leases a subnet and flanneld
// writes subnet.env, and nothing else. Something outside flannel (a cloud
// route table, a routing daemon) carries the traffic, so the node neither
// programs the kernel nor follows other nodes.
package alloc

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// TypeName is the Backend "Type" this package serves.
const TypeName = "alloc"

// Backend is the alloc backend; it only needs the external interface's MTU.
type Backend struct {
	ext *backend.ExternalInterface
}

// New is the backend.Factory for "alloc". Upstream's alloc has no options;
// any keys given are ignored as upstream ignores them.
func New(ext *backend.ExternalInterface, _ json.RawMessage) (backend.Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, fmt.Errorf("alloc: no external interface")
	}
	return &Backend{ext: ext}, nil
}

// RegisterNetwork creates nothing.
func (b *Backend) RegisterNetwork(_ context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return nil, fmt.Errorf("alloc: the network enables neither IPv4 nor IPv6")
	}
	return &network{mtu: b.ext.Iface.MTU}, nil
}

type network struct{ mtu int }

func (n *network) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: TypeName} }

func (n *network) Activate(context.Context, *lease.Lease) error { return nil }

// MTU is the external interface's: alloc adds no header.
func (n *network) MTU() int { return n.mtu }

// HandleEvents is never called: IgnoresPeers tells the daemon not to watch.
func (n *network) HandleEvents(context.Context, []lease.Event) {}

// IgnoresPeers marks alloc as a backend.PeerIndifferent network.
func (n *network) IgnoresPeers() {}
