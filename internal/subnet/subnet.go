// Package subnet defines the seam between the daemon and the datastore that
// records which node owns which subnet (etcd, or the Kubernetes API).
package subnet

import (
	"context"
	"errors"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// ErrNoFreeSubnet is wrapped by AcquireLease when every subnet is taken.
var ErrNoFreeSubnet = errors.New("no free subnet")

// ErrLeaseTaken is wrapped by RenewLease when this node's lease was deleted
// and another node has since taken its subnet. Renewing can never succeed
// then: the daemon exits, so that its supervisor restarts it into a fresh
// subnet. The text is upstream's, which logs it and exits in that case.
var ErrLeaseTaken = errors.New("lease has been revoked")

// Manager hands out and tracks subnet leases. Implementations never touch
// netlink; they only talk to their datastore.
type Manager interface {
	// GetNetworkConfig returns the validated network configuration.
	GetNetworkConfig(ctx context.Context) (*config.Config, error)
	// AcquireLease returns this node's lease: its existing one when the
	// datastore still holds a lease with the same public address, otherwise a
	// newly allocated free subnet. attrs is what the node publishes.
	AcquireLease(ctx context.Context, attrs *lease.Attrs) (*lease.Lease, error)
	// RenewLease extends the lease's lifetime and updates l.Expiration. A
	// lease that vanished is written again unless another node took its
	// subnet meanwhile: then the error wraps ErrLeaseTaken.
	RenewLease(ctx context.Context, l *lease.Lease) error
	// WatchLeases sends batches of events until ctx ends. The first batch is
	// the full current set as Added events (possibly empty), this node's
	// own lease included. After any gap (outage, compaction) the manager
	// re-lists and sends the difference, including Removed events for
	// leases that vanished meanwhile. It returns only when ctx is done.
	//
	// What the events carry, the same from every manager
	// (contract_test.go holds both to it):
	//   - a lease's subnets are network addresses, so its Key parses back
	//     to them (lease.ParseKey);
	//   - an Added event, for a new lease or one whose attributes changed,
	//     carries the whole lease as the datastore holds it now;
	//   - a Removed event names the lease by its subnets. Its attributes
	//     are either those last sent for it or none at all: etcd keeps no
	//     value for a deleted key, and a manager need not keep a copy of
	//     every lease to restore them. The daemon keeps
	//     them in its lease set (internal/leaseset), which is what hands
	//     the backends full leases for removals as for additions.
	WatchLeases(ctx context.Context, events chan<- []lease.Event) error
	// Name identifies the manager in logs ("etcd", "kube").
	Name() string
}

// WatchStatusReporter is an optional part of a Manager whose WatchLeases
// rides out datastore outages by itself (and so does not return). The
// daemon registers report before WatchLeases starts; the manager calls
// report(err) when its view of the leases stops following the datastore,
// and report(nil) once it follows it again (after the re-list). The daemon
// answers /readyz from it: a node must never say "ready" while deaf.
type WatchStatusReporter interface {
	ReportWatchStatus(report func(err error))
}
