package daemon

import (
	"context"
	"encoding/json"

	"github.com/flannelgo/flannel/internal/backend"
)

// backendStore is a subnet manager that keeps what the node published in
// its last run (Kubernetes: the backend-type and backend-data annotations).
type backendStore interface {
	StoredBackend(ctx context.Context) (typ string, v4, v6 json.RawMessage)
}

// resumeBackend hands a backend that can use it what this node published
// for the same backend type last time, as upstream restores the VXLAN MAC
// from the node's backend-data annotation.
func (d *Daemon) resumeBackend(ctx context.Context, be backend.Backend, typ string) {
	r, ok := be.(backend.Resumer)
	s, stored := d.mgr.(backendStore)
	if !ok || !stored {
		return
	}
	if was, v4, v6 := s.StoredBackend(ctx); was == typ {
		r.Resume(v4, v6)
	}
}
