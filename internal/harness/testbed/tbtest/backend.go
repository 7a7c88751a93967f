package tbtest

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// BackendConfig is a validated-looking network config on the test pod ranges:
// /24 IPv4 subnets of 10.244.0.0/16 and /64 IPv6 subnets of
// fd00:10:244::/56, for whichever families are enabled.
func BackendConfig(backendType string, v4, v6 bool) *config.Config {
	c := &config.Config{EnableIPv4: v4, EnableIPv6: v6, BackendType: backendType}
	if v4 {
		c.Network, c.SubnetLen = PodNet, 24
		c.SubnetMin, c.SubnetMax = netip.MustParseAddr("10.244.1.0"), netip.MustParseAddr("10.244.255.0")
	}
	if v6 {
		c.IPv6Network, c.IPv6SubnetLen = PodNet6, 64
		c.IPv6SubnetMin, c.IPv6SubnetMax = netip.MustParseAddr("fd00:10:244:1::"), netip.MustParseAddr("fd00:10:244:ff::")
	}
	return c
}

// Up registers be's network for cfg and activates it with the node's own
// subnets ("10.244.1.0/24", "fd00:10:244:1::/64"; either may be ""), the
// way the daemon does, and returns it with the lease other nodes see.
func Up(t testing.TB, n *Node, be backend.Backend, cfg *config.Config, subnet4, subnet6 string) (backend.Network, lease.Lease) {
	t.Helper()
	nw, err := be.RegisterNetwork(context.Background(), cfg)
	if err != nil {
		t.Fatalf("register network on %s: %v", n.Name, err)
	}
	attrs := nw.LeaseAttrs()
	attrs.PublicIP, attrs.PublicIPv6 = n.Ext.ExtAddr, n.Ext.ExtV6Addr
	l := lease.Lease{Attrs: attrs}
	if subnet4 != "" {
		l.Subnet = netip.MustParsePrefix(subnet4)
	}
	if subnet6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(subnet6)
	}
	if err := nw.Activate(context.Background(), &l); err != nil {
		t.Fatalf("activate network on %s: %v", n.Name, err)
	}
	return nw, l
}

// Added is a batch announcing the leases.
func Added(ls ...lease.Lease) []lease.Event { return events(lease.Added, ls) }

// Removed is a batch withdrawing the leases.
func Removed(ls ...lease.Lease) []lease.Event { return events(lease.Removed, ls) }

func events(typ lease.EventType, ls []lease.Lease) []lease.Event {
	evs := make([]lease.Event, 0, len(ls))
	for _, l := range ls {
		evs = append(evs, lease.Event{Type: typ, Lease: l})
	}
	return evs
}

// Logs collects what klog writes while a test runs. klog is process-wide,
// so tests that capture logs must not run in parallel with each other.
type Logs struct {
	mu     sync.Mutex
	lines  []string
	errors []bool
}

// CaptureLogs routes klog to a Logs until the test ends.
func CaptureLogs(t testing.TB) *Logs {
	l := &Logs{}
	klog.SetLogger(logr.New(sink{l}))
	t.Cleanup(klog.ClearLogger)
	return l
}

func (l *Logs) add(isErr bool, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, msg)
	l.errors = append(l.errors, isErr)
}

// Matching returns the captured messages that contain every one of parts.
func (l *Logs) Matching(parts ...string) []string { return l.match(false, parts) }

// Errors returns the captured error messages (klog.Errorf and the like)
// that contain every one of parts.
func (l *Logs) Errors(parts ...string) []string { return l.match(true, parts) }

func (l *Logs) match(errorsOnly bool, parts []string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for i, line := range l.lines {
		if errorsOnly && !l.errors[i] {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// sink is the smallest logr sink that tells errors from the rest.
type sink struct{ l *Logs }

func (s sink) Init(logr.RuntimeInfo)               {}
func (s sink) Enabled(int) bool                    { return true }
func (s sink) Info(_ int, msg string, _ ...any)    { s.l.add(false, msg) }
func (s sink) Error(_ error, msg string, _ ...any) { s.l.add(true, msg) }
func (s sink) WithValues(...any) logr.LogSink      { return s }
func (s sink) WithName(string) logr.LogSink        { return s }
