package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/leaseset"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/subnet"
)

// fakeManager feeds scripted lease batches and counts renewals.
type fakeManager struct {
	batches  chan []lease.Event
	mu       sync.Mutex
	renews   int
	renewErr error // what RenewLease returns
}

func (f *fakeManager) Name() string { return "fake" }
func (f *fakeManager) GetNetworkConfig(context.Context) (*config.Config, error) {
	return &config.Config{}, nil
}
func (f *fakeManager) AcquireLease(context.Context, *lease.Attrs) (*lease.Lease, error) {
	return nil, nil
}
func (f *fakeManager) RenewLease(_ context.Context, l *lease.Lease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renews++
	if f.renewErr != nil {
		return f.renewErr
	}
	if !l.Expiration.IsZero() {
		l.Expiration = time.Now().Add(time.Hour)
	}
	return nil
}
func (f *fakeManager) WatchLeases(ctx context.Context, out chan<- []lease.Event) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b := <-f.batches:
			out <- b
		}
	}
}
func (f *fakeManager) renewCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renews
}

// fakeNetwork records what the daemon hands to the backend.
type fakeNetwork struct {
	mu      sync.Mutex
	handled [][]lease.Event
}

func (n *fakeNetwork) LeaseAttrs() lease.Attrs                      { return lease.Attrs{} }
func (n *fakeNetwork) Activate(context.Context, *lease.Lease) error { return nil }
func (n *fakeNetwork) MTU() int                                     { return 1450 }
func (n *fakeNetwork) HandleEvents(_ context.Context, evs []lease.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handled = append(n.handled, evs)
}
func (n *fakeNetwork) batches() [][]lease.Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([][]lease.Event(nil), n.handled...)
}

func mkLease(subnet, publicIP string) *lease.Lease {
	return &lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(publicIP), BackendType: "vxlan"}}
}

// hostList is a node's addresses and routes, given up front.
type hostList []leaseset.HostPrefix

func (h hostList) Prefixes() ([]leaseset.HostPrefix, error) { return h, nil }

// newPeers is the lease set Run builds, for mkLease's network and a node
// whose underlay is 198.51.100.0/24.
func newPeers(t *testing.T, own *lease.Lease) *leaseset.Set {
	t.Helper()
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	return leaseset.New(cfg, own, hostList{
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Route: true, Connected: true, What: "route 198.51.100.0/24 dev eth0"},
		{Prefix: netip.PrefixFrom(own.Attrs.PublicIP, 32), What: "address " + own.Attrs.PublicIP.String() + "/24 on eth0"},
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tbtest.Eventually(t, 5*time.Second, what, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}

// The backend never sees the node's own lease; readiness comes with the
// first batch; the own lease's removal makes the daemon renew at once.
func TestFollowPeers(t *testing.T) {
	mgr := &fakeManager{batches: make(chan []lease.Event)}
	m := metrics.New()
	d := New(Options{RenewMargin: time.Minute}, mgr, nil, m)
	own := mkLease("10.244.1.0/24", "198.51.100.11")
	own.Expiration = time.Now().Add(time.Hour)
	peer := mkLease("10.244.2.0/24", "198.51.100.12")
	nw := &fakeNetwork{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	renewNow := make(chan struct{}, 1)
	go d.renewLoop(ctx, own, renewNow, func(error) {})
	go d.followPeers(ctx, newPeers(t, own), nw, own, renewNow)

	if m.IsReady() {
		t.Fatal("ready before the first batch")
	}
	mgr.batches <- []lease.Event{{Type: lease.Added, Lease: *own}, {Type: lease.Added, Lease: *peer}}
	waitFor(t, "first batch applied", func() bool { return len(nw.batches()) == 1 })
	if got := nw.batches()[0]; len(got) != 1 || got[0].Lease.Key() != peer.Key() {
		t.Errorf("backend got %v, want only the peer", got)
	}
	waitFor(t, "ready", m.IsReady)
	if v := gauge(t, m.Peers); v != 1 {
		t.Errorf("flannel_peers = %v, want 1", v)
	}
	if v := gauge(t, m.PoolUsed); v != 2 {
		t.Errorf("flannel_subnet_pool_used = %v, want 2 (own and peer)", v)
	}
	var h dto.Metric
	if err := m.LeaseApply.(prometheus.Metric).Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("flannel_lease_event_apply_duration_seconds: %d batches observed (%v), want 1", h.GetHistogram().GetSampleCount(), err)
	}
	if mgr.renewCount() != 0 {
		t.Fatalf("renewed %d times before the margin", mgr.renewCount())
	}

	mgr.batches <- []lease.Event{{Type: lease.Removed, Lease: *own}, {Type: lease.Removed, Lease: *peer}}
	waitFor(t, "own lease re-created", func() bool { return mgr.renewCount() == 1 })
	waitFor(t, "second batch applied", func() bool { return len(nw.batches()) == 2 })
	if v := gauge(t, m.Peers); v != 0 {
		t.Errorf("flannel_peers = %v after removal, want 0", v)
	}
}

// When the own lease is gone and another node holds its subnet, the daemon
// stops following and returns the datastore's error (flanneld exits 1);
// a renewal error of another kind is retried.
func TestLeaseTakenStopsDaemon(t *testing.T) {
	taken := fmt.Errorf("renew lease 10.244.1.0/24: %w: subnet 10.244.1.0-24 is now held by node 198.51.100.99", subnet.ErrLeaseTaken)
	for _, tc := range []struct {
		name     string
		err      error
		wantExit bool
	}{{"taken", taken, true}, {"etcd down", errors.New("etcd unavailable"), false}} {
		t.Run(tc.name, func(t *testing.T) {
			mgr := &fakeManager{batches: make(chan []lease.Event), renewErr: tc.err}
			d := New(Options{RenewMargin: time.Minute}, mgr, nil, metrics.New())
			own := mkLease("10.244.1.0/24", "198.51.100.11")
			own.Expiration = time.Now().Add(time.Hour)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- d.follow(ctx, newPeers(t, own), &fakeNetwork{}, own) }()
			mgr.batches <- []lease.Event{{Type: lease.Added, Lease: *own}}
			mgr.batches <- []lease.Event{{Type: lease.Removed, Lease: *own}}
			select {
			case err := <-done:
				if !tc.wantExit || !errors.Is(err, subnet.ErrLeaseTaken) {
					t.Fatalf("follow returned %v; want it to keep running on %q", err, tc.err)
				}
			case <-time.After(2 * time.Second):
				if tc.wantExit {
					t.Fatal("the daemon kept running after its subnet was taken")
				}
			}
		})
	}
}

// flannel_peers counts the leases it let through:
// a refused lease is not a programmed peer, and a removal frees its place.
func TestFollowPeersCountsAcceptedLeases(t *testing.T) {
	mgr := &fakeManager{batches: make(chan []lease.Event)}
	m := metrics.New()
	d := New(Options{RenewMargin: time.Minute}, mgr, nil, m)
	own := mkLease("10.244.1.0/24", "198.51.100.11")
	own.Expiration = time.Now().Add(time.Hour)
	good, good2 := mkLease("10.244.2.0/24", "198.51.100.12"), mkLease("10.244.3.0/24", "198.51.100.13")
	bad := mkLease("10.245.0.0/24", "198.51.100.14") // outside the network
	nw := &fakeNetwork{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.followPeers(ctx, newPeers(t, own), nw, own, make(chan struct{}, 1))

	mgr.batches <- []lease.Event{{Type: lease.Added, Lease: *own}, {Type: lease.Added, Lease: *good}, {Type: lease.Added, Lease: *bad}, {Type: lease.Added, Lease: *good2}}
	waitFor(t, "first batch applied", func() bool { return len(nw.batches()) == 1 })
	waitFor(t, "ready", m.IsReady)
	if v := gauge(t, m.Peers); v != 2 {
		t.Errorf("flannel_peers = %v, want 2 (the refused lease is not a peer)", v)
	}
	mgr.batches <- []lease.Event{{Type: lease.Removed, Lease: *good}, {Type: lease.Removed, Lease: *bad}}
	waitFor(t, "second batch applied", func() bool { return len(nw.batches()) == 2 })
	if v := gauge(t, m.Peers); v != 1 {
		t.Errorf("flannel_peers = %v after the removals, want 1", v)
	}
}

// A lease that is due within the margin is renewed at once; one without
// expiry (Kubernetes) is never renewed on a timer.
func TestRenewTiming(t *testing.T) {
	for _, tc := range []struct {
		name   string
		expiry time.Time
		want   int
	}{
		{"due", time.Now().Add(30 * time.Second), 1},
		{"no expiry", time.Time{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mgr := &fakeManager{}
			d := New(Options{RenewMargin: time.Minute}, mgr, nil, metrics.New())
			own := mkLease("10.244.1.0/24", "198.51.100.11")
			own.Expiration = tc.expiry
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			d.renewLoop(ctx, own, make(chan struct{}), func(error) {})
			if got := mgr.renewCount(); got != tc.want {
				t.Errorf("renewed %d times, want %d", got, tc.want)
			}
		})
	}
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var out dto.Metric
	if err := g.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetGauge().GetValue()
}

// storingManager is a fakeManager that kept the node's backend annotations.
type storingManager struct {
	fakeManager
	typ    string
	v4, v6 json.RawMessage
}

func (m *storingManager) StoredBackend(context.Context) (string, json.RawMessage, json.RawMessage) {
	return m.typ, m.v4, m.v6
}

// resumingBackend records what the daemon resumes it with.
type resumingBackend struct{ v4, v6 json.RawMessage }

func (b *resumingBackend) RegisterNetwork(context.Context, *config.Config) (backend.Network, error) {
	return nil, errors.New("not used")
}
func (b *resumingBackend) Resume(v4, v6 json.RawMessage) { b.v4, b.v6 = v4, v6 }

// A backend is resumed with what the node published for the same backend
// type in its last run, and not with another type's data.
func TestResumeBackend(t *testing.T) {
	data := json.RawMessage(`{"VNI":1,"VtepMAC":"ae:11:22:33:44:55"}`)
	for _, tc := range []struct {
		stored string
		want   json.RawMessage
	}{{"vxlan", data}, {"host-gw", nil}, {"", nil}} {
		d := New(Options{}, &storingManager{typ: tc.stored, v4: data}, nil, metrics.New())
		be := &resumingBackend{}
		d.resumeBackend(context.Background(), be, "vxlan")
		if string(be.v4) != string(tc.want) || be.v6 != nil {
			t.Errorf("stored type %q: resumed with %s, %s; want %s", tc.stored, be.v4, be.v6, tc.want)
		}
	}
}
