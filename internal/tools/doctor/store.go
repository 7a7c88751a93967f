package doctor

import (
	"context"
	"fmt"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnet"
)

// ManagerStore reads config and leases through a subnet manager, exactly
// as flanneld sees them.
type ManagerStore struct {
	subnet.Manager
	// Via says where the manager's config comes from when that is not
	// where flanneld reads it (a ConfigMap instead of the file).
	Via string
}

// Name names the datastore, and where its config came from.
func (m ManagerStore) Name() string {
	if m.Via == "" {
		return m.Manager.Name()
	}
	return m.Manager.Name() + " (" + m.Via + ")"
}

// Config returns the validated network config.
func (m ManagerStore) Config(ctx context.Context) (*config.Config, error) {
	return m.GetNetworkConfig(ctx)
}

// Leases returns every current lease: the first batch of WatchLeases is
// the full set.
func (m ManagerStore) Leases(ctx context.Context) ([]lease.Lease, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan []lease.Event, 1)
	errc := make(chan error, 1)
	go func() { errc <- m.WatchLeases(ctx, events) }()
	select {
	case batch := <-events:
		out := make([]lease.Lease, 0, len(batch))
		for _, ev := range batch {
			if ev.Type == lease.Added {
				out = append(out, ev.Lease)
			}
		}
		return out, nil
	case err := <-errc:
		return nil, fmt.Errorf("list leases from %s: %w", m.Name(), err)
	case <-ctx.Done():
		return nil, fmt.Errorf("list leases from %s: %w", m.Name(), ctx.Err())
	}
}
