package droplog

import (
	"context"
	"net/netip"
	"sync/atomic"

	"github.com/flannelgo/flannel/internal/netpol"
)

// ModelKeeper passes each compiled model on to the table and keeps the
// last one, so records name pods and policies exactly as the rules in the
// kernel were built (and as `policy explain` reasons).
type ModelKeeper struct {
	Next netpol.Rules
	last atomic.Pointer[netpol.Model]
}

// Sync implements netpol.Rules.
func (k *ModelKeeper) Sync(ctx context.Context, m *netpol.Model) error {
	if err := k.Next.Sync(ctx, m); err != nil {
		return err
	}
	k.last.Store(m)
	return nil
}

// fill names both ends of r and the policies isolating the pod on the
// side that dropped it: the destination for ingress, the source for
// egress.
func (k *ModelKeeper) fill(r *Record) {
	m := k.last.Load()
	if m == nil {
		return
	}
	r.Source, r.Dest = endpoint(m, r.Source.IP), endpoint(m, r.Dest.IP)
	dir, pod := netpol.Ingress, r.Dest.IP
	if r.Direction == netpol.Egress.String() {
		dir, pod = netpol.Egress, r.Source.IP
	}
	if pr := m.Rules[dir][pod]; pr != nil {
		r.Policies = pr.Policies
	}
}

func endpoint(m *netpol.Model, ip netip.Addr) Endpoint {
	if p, ok := m.Pods[ip]; ok {
		return Endpoint{IP: ip, Namespace: p.Namespace, Pod: p.Name}
	}
	return Endpoint{IP: ip}
}
