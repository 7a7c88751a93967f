package metrics

import (
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// The named conditions flanneld's readiness is made of. /readyz answers 200
// only while none fails, and lists every failing one with its detail.
const (
	// CondNetwork: the lease, data plane, traffic rules and subnet file
	// are in place (the first complete batch of leases applied).
	CondNetwork = "network"
	// CondLeaseWatch: the node follows other nodes' leases.
	CondLeaseWatch = "lease-watch"
	// CondConfig: the daemon runs with the datastore's network config.
	CondConfig = "config"
	// CondStopping: the daemon is shutting down.
	CondStopping = "stopping"
)

// Readiness is the one source of /readyz and the flannel_ready gauge: a
// set of named conditions, each failing with a detail for the operator or
// holding. A new Readiness fails CondNetwork until it is passed.
type Readiness struct {
	gauge   prometheus.Gauge
	mu      sync.Mutex
	failing map[string]string // condition -> detail
}

func newReadiness(gauge prometheus.Gauge) *Readiness {
	r := &Readiness{gauge: gauge, failing: map[string]string{}}
	r.Fail(CondNetwork, "lease, data plane, traffic rules or subnet file not in place yet")
	return r
}

// Fail marks cond failing with detail; it reports whether cond held until
// now.
func (r *Readiness) Fail(cond, detail string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, was := r.failing[cond]
	r.failing[cond] = detail
	r.gauge.Set(0)
	return !was
}

// Pass marks cond holding; it reports whether cond was failing until now.
func (r *Readiness) Pass(cond string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, was := r.failing[cond]
	delete(r.failing, cond)
	if len(r.failing) == 0 {
		r.gauge.Set(1)
	}
	return was
}

// IsReady reports whether every condition holds (what /readyz answers).
func (r *Readiness) IsReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.failing) == 0
}

// Failing lists the failing conditions as "name: detail", by name.
func (r *Readiness) Failing() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.failing))
	for c, d := range r.failing {
		out = append(out, c+": "+d)
	}
	sort.Strings(out)
	return out
}

// NotReadyReason is every failing condition in one line ("" when ready).
func (r *Readiness) NotReadyReason() string { return strings.Join(r.Failing(), "; ") }
