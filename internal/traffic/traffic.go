// Package traffic installs and keeps in place the masquerade and forward
// rules flanneld needs: pods reach the outside world with the node's address,
// pod-to-pod traffic inside the flannel network is never masqueraded, and the
// FORWARD path accepts the pod network even where its policy is DROP.
//
// Two implementations share one rule plan (rules.go): iptables through
// github.com/coreos/go-iptables and nftables through sigs.k8s.io/knftables.
// Both exec the iptables/nft binaries, so the rules land in the network
// namespace of the OS thread that calls New*, Apply and Cleanup.
package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/pace"
)

// Config says which rules to install for which networks.
type Config struct {
	Network, Subnet         netip.Prefix // IPv4 flannel network and this node's subnet (invalid = no IPv4)
	IPv6Network, IPv6Subnet netip.Prefix // invalid = no IPv6
	Masquerade              bool         // --ip-masq
	FullyRandom             bool         // true unless --ip-masq-fully-random-disable
	Forward                 bool         // --iptables-forward-rules
}

// Manager installs the rules and keeps them installed.
type Manager interface {
	// Apply makes the rules exactly as desired. It is idempotent. repaired
	// is true when an earlier Apply of this Manager had succeeded and this
	// one found the rules changed or missing and restored them; the first
	// Apply installs and never reports a repair.
	Apply(ctx context.Context) (repaired bool, err error)
	// Run calls Apply every resync interval until ctx ends. It logs each
	// repair, and each distinct error once (not once per interval).
	// Callers Apply once themselves first, to fail fast at start-up, and
	// stop Run before calling Cleanup.
	Run(ctx context.Context, resync time.Duration)
	// Cleanup removes everything this manager adds: its chains or tables
	// and the jumps into them.
	Cleanup(ctx context.Context) error
}

// defaultResync is used when Run is given a non-positive interval
// (upstream's --iptables-resync default).
const defaultResync = 5 * time.Second

// family is one IP family's networks, already validated and masked.
type family struct {
	v6      bool
	network netip.Prefix
	subnet  netip.Prefix
}

func (f family) String() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// families validates cfg and returns the families it enables.
func (c Config) families() ([]family, error) {
	var fams []family
	if c.Network.IsValid() || c.Subnet.IsValid() {
		f, err := newFamily(false, c.Network, c.Subnet)
		if err != nil {
			return nil, err
		}
		fams = append(fams, f)
	}
	if c.IPv6Network.IsValid() || c.IPv6Subnet.IsValid() {
		f, err := newFamily(true, c.IPv6Network, c.IPv6Subnet)
		if err != nil {
			return nil, err
		}
		fams = append(fams, f)
	}
	if len(fams) == 0 {
		return nil, errors.New("traffic rules: neither an IPv4 nor an IPv6 network is configured; set Network/Subnet or IPv6Network/IPv6Subnet")
	}
	return fams, nil
}

func newFamily(v6 bool, network, subnet netip.Prefix) (family, error) {
	f := family{v6: v6, network: network.Masked(), subnet: subnet.Masked()}
	if !network.IsValid() || !subnet.IsValid() {
		return f, fmt.Errorf("traffic rules: %s network %s and subnet %s must both be set or both be unset", f, network, subnet)
	}
	for _, p := range []netip.Prefix{network, subnet} {
		if p.Addr().Is4() == v6 || p.Addr().Is4In6() {
			return f, fmt.Errorf("traffic rules: %s is not an %s prefix", p, f)
		}
	}
	if subnet.Bits() < network.Bits() || !f.network.Contains(f.subnet.Addr()) {
		return f, fmt.Errorf("traffic rules: subnet %s is not inside network %s; check the lease against the network config", subnet, network)
	}
	return f, nil
}

// familyRules is one family's rules in one implementation.
type familyRules interface {
	// sync makes the rules as desired and says whether it changed anything.
	sync(ctx context.Context) (changed bool, err error)
	// cleanup removes everything sync may have created.
	cleanup(ctx context.Context) error
}

// manager holds what both implementations share: the repair bookkeeping,
// the resync loop and serialisation of Apply/Cleanup.
type manager struct {
	kind     string // "iptables" or "nftables", for messages
	families []familyRules

	mu      sync.Mutex
	applied bool // an Apply has succeeded since construction or Cleanup
}

func (m *manager) Apply(ctx context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for _, f := range m.families {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("apply %s rules: %w", m.kind, err)
		}
		c, err := f.sync(ctx)
		changed = changed || c
		if err != nil {
			return changed && m.applied, err
		}
	}
	repaired := changed && m.applied
	m.applied = true
	return repaired, nil
}

func (m *manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, f := range m.families {
		errs = append(errs, f.cleanup(ctx))
	}
	m.applied = false
	return errors.Join(errs...)
}

func (m *manager) Run(ctx context.Context, resync time.Duration) {
	if resync <= 0 {
		resync = defaultResync
	}
	lastErr := ""
	pace.Every(ctx, resync, 0, func(ctx context.Context) bool {
		repaired, err := m.Apply(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			if msg := err.Error(); msg != lastErr {
				klog.Errorf("%v (retrying every %s)", err, resync)
				lastErr = msg
			}
			return true
		}
		if lastErr != "" {
			klog.Infof("%s masquerade/forward rules are in place again", m.kind)
			lastErr = ""
		}
		if repaired {
			klog.Infof("%s masquerade/forward rules were deleted or changed behind our back; restored", m.kind)
		}
		return true
	})
}
