// Package backend defines how the daemon drives a data plane (vxlan, host-gw,
// ...), and holds the registry that maps a backend type name to its factory.
package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// ExternalInterface is the node's underlay: where encapsulated or routed
// traffic leaves, and the address other nodes send it to.
type ExternalInterface struct {
	Iface       *net.Interface
	IfaceAddr   netip.Addr // IPv4 address on Iface, if any
	IfaceV6Addr netip.Addr // IPv6 address on Iface, if any
	ExtAddr     netip.Addr // advertised IPv4 (--public-ip, else IfaceAddr)
	ExtV6Addr   netip.Addr // advertised IPv6 (--public-ipv6, else IfaceV6Addr)
}

// Backend prepares a data plane for one network. It never talks to the
// datastore: the daemon acquires the lease with the attributes the backend
// returns and hands the lease back.
type Backend interface {
	// RegisterNetwork creates local devices and returns a Network whose
	// LeaseAttrs the daemon publishes.
	RegisterNetwork(ctx context.Context, cfg *config.Config) (Network, error)
}

// Network is a registered data plane.
type Network interface {
	// LeaseAttrs is what this node publishes (backend type and data; the
	// daemon fills in the public addresses).
	LeaseAttrs() lease.Attrs
	// Activate configures local devices for this node's own lease.
	Activate(ctx context.Context, own *lease.Lease) error
	// MTU is the MTU pods must use on this network.
	MTU() int
	// HandleEvents programs or removes peers. Events never include the
	// node's own lease, and carry the lease's subnets and attributes; a
	// Removed event those the Network was last given for the lease (see
	// lease.Event, from either datastore). Errors for one peer are logged and do not stop
	// others; a Network that also implements Healer (heal.go) retries them
	// with back-off, others on the next event for that peer.
	HandleEvents(ctx context.Context, events []lease.Event)
}

// PeerIndifferent is implemented by a Network that needs nothing from other
// nodes' leases (alloc): the daemon then never watches the datastore for
// them, so in Kubernetes mode no Node informer runs at all. Such a network
// is ready as soon as subnet.env is written.
type PeerIndifferent interface {
	Network
	IgnoresPeers()
}

// Resumer is a backend that takes up what this node published in its last
// run (its BackendData per family, nil where none), when the datastore kept
// it across a reboot that removed the node's devices. The daemon calls
// Resume before RegisterNetwork. The VXLAN backend gives a device it has to
// create the VTEP MAC the peers still have in their FDB, as upstream does.
type Resumer interface {
	Resume(v4, v6 json.RawMessage)
}

// Factory builds a backend for the given underlay and raw backend config.
type Factory func(ext *ExternalInterface, raw json.RawMessage) (Backend, error)

// Registry maps a backend type name ("vxlan") to its factory. It is built in
// main, not at package init, so tests can register exactly what they need.
type Registry map[string]Factory

// Check says whether typ is a backend of this build, so that a misspelt
// Backend.Type is reported before any work (choosing an interface) starts.
func (r Registry) Check(typ string) error {
	if _, ok := r[typ]; ok {
		return nil
	}
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Errorf("unknown backend type %q (supported: %v): fix Backend.Type in the network config", typ, names)
}

// New builds the backend named typ.
func (r Registry) New(typ string, ext *ExternalInterface, raw json.RawMessage) (Backend, error) {
	if err := r.Check(typ); err != nil {
		return nil, err
	}
	return r[typ](ext, raw)
}

// Transported is implemented by a Network whose traffic between nodes
// needs a port or protocol that firewalls must let through. Transport names
// it as an operator writes a firewall rule, e.g. "UDP 8472 (VXLAN)", for
// messages that tell the operator what to open.
type Transported interface {
	Transport() string
}

// Instrumented is implemented by a Network whose data path runs inside
// flanneld (udp, userspace WireGuard) and so has counters of its own; the
// daemon adds them to /metrics.
type Instrumented interface {
	Collectors() []prometheus.Collector
}
