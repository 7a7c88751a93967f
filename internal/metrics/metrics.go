// Package metrics serves /healthz, /readyz and Prometheus metrics for
// flanneld.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Metrics holds the daemon's health state and its Prometheus collectors.
type Metrics struct {
	*Readiness // the conditions /readyz and flannel_ready report
	clusterMetrics
	registry *prometheus.Registry
	// routes are served beside /metrics (the policy drop log); a ServeMux
	// takes registrations while it serves.
	routes *http.ServeMux

	Ready          prometheus.Gauge
	Peers          prometheus.Gauge
	LeaseEvents    *prometheus.CounterVec
	LeaseRenewals  *prometheus.CounterVec
	LeaseExpiry    prometheus.Gauge
	RuleRepairs    prometheus.Counter
	DatastoreFails prometheus.Counter

	ReconcileRepairs *prometheus.CounterVec
	ReconcileErrors  prometheus.Counter

	LeasesRejected     *prometheus.CounterVec
	OwnLeaseReasserted prometheus.Counter
	ConfigMismatch     prometheus.Gauge
}

// New creates a fresh registry with flanneld's collectors.
func New() *Metrics {
	m := &Metrics{
		registry:       prometheus.NewRegistry(),
		routes:         http.NewServeMux(),
		clusterMetrics: newClusterMetrics(),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_ready",
			Help: "1 when every readiness condition holds (/readyz answers 200): lease, data plane, traffic rules and subnet file in place, other nodes' leases followed, the network config current."}),
		Peers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_peers",
			Help: "Number of remote subnets currently programmed."}),
		LeaseEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_lease_events_total",
			Help: "Lease events received from the subnet manager, by type."}, []string{"type"}),
		LeaseRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_lease_renewals_total",
			Help: "Attempts to renew this node's lease, by result."}, []string{"result"}),
		LeaseExpiry: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_lease_expiration_timestamp_seconds",
			Help: "When this node's lease expires unless renewed (Unix time)."}),
		RuleRepairs: prometheus.NewCounter(prometheus.CounterOpts{Name: "flannel_traffic_rule_repairs_total",
			Help: "Times masquerade/forward rules were found missing and restored."}),
		DatastoreFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "flannel_datastore_errors_total",
			Help: "Failed calls to the subnet manager's datastore."}),
	}
	m.Readiness = newReadiness(m.Ready)
	m.ReconcileRepairs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_reconcile_repairs_total",
		Help: "Kernel objects (device, address, route, neighbour, fdb, ebpf-program) found missing or wrong and restored, by kind."}, []string{"kind"})
	m.ReconcileErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "flannel_reconcile_errors_total",
		Help: "Reconciles of the kernel state that failed and were retried with back-off."})
	m.registry.MustRegister(m.ReconcileRepairs, m.ReconcileErrors)
	m.registry.MustRegister(m.Ready, m.Peers, m.LeaseEvents, m.LeaseRenewals, m.LeaseExpiry, m.RuleRepairs, m.DatastoreFails,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.registerLeaseSafety()
	m.registry.MustRegister(m.clusterMetrics.collectors()...)
	return m
}

func (m *Metrics) registerLeaseSafety() {
	m.LeasesRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_leases_rejected_total",
		Help: "Other nodes' leases refused before programming, by reason."}, []string{"reason"})
	m.OwnLeaseReasserted = prometheus.NewCounter(prometheus.CounterOpts{Name: "flannel_own_lease_reasserted_total",
		Help: "Times this node's lease was found overwritten by another writer and written back."})
	m.ConfigMismatch = prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_network_config_mismatch",
		Help: "1 while the datastore's network config differs from the one this daemon runs with (restart to apply it)."})
	m.registry.MustRegister(m.LeasesRejected, m.OwnLeaseReasserted, m.ConfigMismatch)
}

// Repaired counts restored kernel objects (backend.RepairReporter).
func (m *Metrics) Repaired(kind string, n int) {
	m.ReconcileRepairs.WithLabelValues(kind).Add(float64(n))
}

// ReconcileFailed counts a failed reconcile (backend.RepairReporter).
func (m *Metrics) ReconcileFailed() { m.ReconcileErrors.Inc() }

// Handler serves /healthz (the process is alive), /readyz, /metrics and
// the added routes on one address: upstream's --healthz-port, and
// --metrics-address (where the health endpoints are served too, so that
// `flannelctl doctor --healthz` works with the address a scraper knows).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", m.HealthHandler())
	mux.Handle("/readyz", m.HealthHandler())
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	mux.Handle("/", m.routes)
	return mux
}

// HealthHandler serves /healthz and /readyz alone: what a kubelet probe
// needs, and nothing about the cluster.
func (m *Metrics) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if failing := m.Failing(); len(failing) > 0 {
			http.Error(w, "not ready: "+strings.Join(failing, "; "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Handle adds a route beside /metrics; it may be called while serving.
func (m *Metrics) Handle(pattern string, h http.Handler) { m.routes.Handle(pattern, h) }

// Serve listens on addr until ctx ends, serving h; what names the server
// and its flag in messages. The listener is opened before it returns, so a
// port already in use is reported at start-up.
func Serve(ctx context.Context, addr string, h http.Handler, what string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listen on %s: %w (choose another address or port)", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.Errorf("%s server on %s stopped: %v", what, addr, err)
		}
	}()
	klog.Infof("serving %s on %s", what, addr)
	return nil
}

// Register adds a backend's collectors to /metrics.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.registry.Register(c); err != nil {
			return fmt.Errorf("register backend metrics: %w", err)
		}
	}
	return nil
}

// Registry is where other packages (internal/peerhealth) register their
// collectors, so that /metrics serves them too.
func (m *Metrics) Registry() prometheus.Registerer { return m.registry }

// Collectors are flanneld's own collectors (not the Go runtime's), for
// the catalog of its metrics (internal/metrics/catalog).
func (m *Metrics) Collectors() []prometheus.Collector {
	return append([]prometheus.Collector{m.Ready, m.Peers, m.LeaseEvents, m.LeaseRenewals, m.LeaseExpiry, m.RuleRepairs, m.DatastoreFails,
		m.ReconcileRepairs, m.ReconcileErrors, m.LeasesRejected, m.OwnLeaseReasserted, m.ConfigMismatch}, m.clusterMetrics.collectors()...)
}
