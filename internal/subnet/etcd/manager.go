// Package etcd is the subnet manager that keeps leases in etcd (v3 API) under
// the same keys and values as upstream flanneld, so both can share a cluster:
// <prefix>/config holds the net-conf JSON and <prefix>/subnets/<key> one
// lease each, attached to an etcd lease that expires unless renewed.
package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnet"
)

// Defaults match upstream flanneld's flags.
const (
	DefaultPrefix   = "/coreos.com/network"
	DefaultLeaseTTL = 24 * time.Hour
)

// DefaultEndpoints is upstream's --etcd-endpoints default, comma-separated
// as on the command line.
const DefaultEndpoints = "http://127.0.0.1:4001,http://127.0.0.1:2379"

// requestTimeout bounds every single etcd call, so an outage turns into an
// error the caller can act on instead of a hang.
const requestTimeout = 5 * time.Second

// ErrConfigNotFound is wrapped by GetNetworkConfig when <prefix>/config is
// absent; callers may wait for an operator to create it.
var ErrConfigNotFound = errors.New("network config not found")

var errClosed = errors.New("etcd subnet manager is closed")

// Options configure the connection and the keys; zero values mean upstream's
// defaults.
type Options struct {
	Endpoints                 []string      // --etcd-endpoints
	Prefix                    string        // --etcd-prefix
	KeyFile, CertFile, CAFile string        // --etcd-keyfile, --etcd-certfile, --etcd-cafile
	Username, Password        string        // --etcd-username, --etcd-password
	LeaseTTL                  time.Duration // TTL of each lease's etcd lease; upstream uses 24h
	// PreviousSubnet and PreviousIPv6Subnet are what this node's
	// subnet.env held from its last run, if anything: proof that a lease
	// with this node's address and that subnet is its own.
	PreviousSubnet, PreviousIPv6Subnet netip.Prefix
}

// Manager implements subnet.Manager on etcd.
type Manager struct {
	opts Options
	ccfg clientv3.Config

	mu     sync.Mutex
	cli    *clientv3.Client
	closed bool

	// connGrace is how long the connection may be down before a watch
	// counts it as an outage; tests shorten or lengthen it.
	connGrace time.Duration
	// removalHold is how long leases missing after a datastore reset are
	// kept; tests shorten it.
	removalHold time.Duration

	badMu   sync.Mutex
	badKeys map[string]bool // keys already reported as unparsable

	ownMu   sync.Mutex
	ownKeys map[string]bool // leases acquired for this node

	// markers counts holdAlive loops; Close waits for them to revoke.
	markers sync.WaitGroup
	// noMarkers is set once etcd refused the liveness marker keys: the
	// user's role grants only upstream's keys (alive.go).
	noMarkers atomic.Bool

	status watchStatus // who hears about watch outages (status.go)
}

var _ subnet.Manager = (*Manager)(nil)

// New prepares a manager. It does not contact etcd: the connection is made
// on first use, so flanneld can start before etcd is up.
func New(opts Options) (*Manager, error) {
	if len(opts.Endpoints) == 0 {
		opts.Endpoints = strings.Split(DefaultEndpoints, ",")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	opts.Prefix = cleanPrefix(opts.Prefix)
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	tlsCfg, err := clientTLS(opts)
	if err != nil {
		return nil, err
	}
	return &Manager{
		opts: opts,
		ccfg: clientv3.Config{
			Endpoints:   opts.Endpoints,
			DialTimeout: requestTimeout,
			// Keepalives notice a silently dead etcd (partition) in seconds
			// rather than after the kernel's TCP timeout.
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: 5 * time.Second,
			TLS:                  tlsCfg,
			Username:             opts.Username,
			Password:             opts.Password,
			// The client's own retry chatter would drown our one-line outage
			// reports.
			Logger: zap.NewNop(),
			// gRPC's default reconnect back-off grows to two minutes; after
			// an outage nodes should find etcd again within seconds.
			DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           grpcbackoff.Config{BaseDelay: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: backoffMax},
				MinConnectTimeout: requestTimeout,
			})},
		},
		connGrace:   defaultConnGrace,
		removalHold: defaultRemovalHold,
		badKeys:     map[string]bool{},
	}, nil
}

// cleanPrefix makes keys come out as upstream's path.Join(prefix, "config")
// does: the prefix is cleaned (no trailing or doubled slashes) and keeps
// its leading slash only if it had one, so "coreos.com/network" names the
// same keys as for upstream flanneld and etcdctl.
func cleanPrefix(p string) string {
	p = path.Clean(p)
	if p == "/" {
		return ""
	}
	return p
}

// clientTLS uses TLS exactly when upstream does: with both --etcd-keyfile
// and --etcd-certfile; --etcd-cafile alone does not switch it on. TLS 1.2
// is the minimum.
func clientTLS(opts Options) (*tls.Config, error) {
	if opts.KeyFile == "" || opts.CertFile == "" {
		if opts.KeyFile != "" || opts.CertFile != "" || opts.CAFile != "" {
			klog.Warningf("etcd TLS needs both --etcd-keyfile and --etcd-certfile (given: keyfile %q, certfile %q, cafile %q); connecting without TLS, as upstream flanneld does",
				opts.KeyFile, opts.CertFile, opts.CAFile)
		}
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: opts.CertFile, KeyFile: opts.KeyFile, TrustedCAFile: opts.CAFile}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS (--etcd-certfile %q, --etcd-keyfile %q, --etcd-cafile %q): %w", opts.CertFile, opts.KeyFile, opts.CAFile, err)
	}
	cfg.MinVersion = tls.VersionTLS12
	return cfg, nil
}

// Name identifies the manager in logs.
func (m *Manager) Name() string { return "etcd" }

// Close releases the connection. Leases stay in etcd until they expire, so a
// restarted node finds and keeps its subnet.
func (m *Manager) Close() error {
	m.waitMarkers(3 * time.Second)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.cli == nil {
		return nil
	}
	err := m.cli.Close()
	m.cli = nil
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client: %w", err)
	}
	return nil
}

// client connects on first use. Without credentials clientv3.New does not
// talk to etcd; with them it authenticates, which fails while etcd is down,
// so a failure here is retried on the next call.
func (m *Manager) client() (*clientv3.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	if m.cli != nil {
		return m.cli, nil
	}
	cli, err := clientv3.New(m.ccfg)
	if err != nil {
		return nil, m.etcdErr("connect", err)
	}
	m.cli = cli
	return cli, nil
}

func (m *Manager) configKey() string     { return m.opts.Prefix + "/config" }
func (m *Manager) subnetsPrefix() string { return m.opts.Prefix + "/subnets/" }
func (m *Manager) endpoints() string     { return strings.Join(m.opts.Endpoints, ",") }

// ttlSeconds is the etcd lease TTL; etcd counts in whole seconds.
func (m *Manager) ttlSeconds() int64 {
	return max(1, int64(math.Ceil(m.opts.LeaseTTL.Seconds())))
}

// etcdErr names the endpoints and tells the operator where to look.
func (m *Manager) etcdErr(op string, err error) error {
	return fmt.Errorf("%s: etcd at %s: %w%s", op, m.endpoints(), err, advice(err))
}

func advice(err error) string {
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrPermissionDenied),
		errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrUserNotFound),
		errors.Is(err, rpctypes.ErrUserEmpty):
		return " (check --etcd-username, --etcd-password and the user's permissions on --etcd-prefix)"
	case errors.Is(err, context.DeadlineExceeded), status.Code(err) == codes.Unavailable,
		status.Code(err) == codes.DeadlineExceeded:
		return " (is etcd running and reachable from this node? check --etcd-endpoints and the --etcd-*file TLS flags)"
	}
	return ""
}

// GetNetworkConfig reads and validates <prefix>/config.
func (m *Manager) GetNetworkConfig(ctx context.Context) (*config.Config, error) {
	cli, err := m.client()
	if err != nil {
		return nil, err
	}
	key := m.configKey()
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := cli.Get(rctx, key)
	if err != nil {
		return nil, m.etcdErr("read network config "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: key %s is missing in etcd at %s: create it, e.g. etcdctl put %s '{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}'",
			ErrConfigNotFound, key, m.endpoints(), key)
	}
	cfg, err := config.Parse(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("network config %s in etcd at %s: %w (fix it with etcdctl put %s '<json>')", key, m.endpoints(), err, key)
	}
	return cfg, nil
}

// record is a parsed lease with the etcd key it came from.
type record struct {
	name string // key below <prefix>/subnets/
	kv   *mvccpb.KeyValue
	l    lease.Lease
}

// list reads every lease and the revision the listing reflects.
func (m *Manager) list(ctx context.Context, cli *clientv3.Client) (int64, []record, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := cli.Get(rctx, m.subnetsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return 0, nil, m.etcdErr("list leases under "+m.subnetsPrefix(), err)
	}
	exp := time.Now().Add(m.opts.LeaseTTL)
	recs := make([]record, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if r, ok := m.decode(kv, exp); ok {
			recs = append(recs, r)
		}
	}
	return resp.Header.Revision, recs, nil
}

// decode turns a key-value into a lease. Expiration is an estimate: reading
// every etcd lease's TTL would cost a request per node.
func (m *Manager) decode(kv *mvccpb.KeyValue, exp time.Time) (record, bool) {
	// Only the name is copied: it is kept for every lease.
	name := string(bytes.TrimPrefix(kv.Key, []byte(m.subnetsPrefix())))
	v4, v6, err := lease.ParseBoundedKey(name)
	if err != nil {
		m.reportBad(string(kv.Key), err)
		return record{}, false
	}
	attrs, err := lease.DecodeValue(kv.Value)
	if err != nil {
		m.reportBad(string(kv.Key), err)
		return record{}, false
	}
	return record{name: name, kv: kv, l: lease.Lease{
		Subnet: v4, IPv6Subnet: v6, Attrs: attrs, Expiration: exp, Revision: kv.ModRevision,
	}}, true
}

// reportBad logs a foreign or corrupt key once, not at every listing or
// rewrite. Keys are remembered (and named) cut to a bounded length, so
// neither the log nor the memory grows with what a hostile writer stores.
func (m *Manager) reportBad(key string, err error) {
	if len(key) > 2*lease.MaxKeyLen {
		key = key[:2*lease.MaxKeyLen] + fmt.Sprintf("...(%d bytes)", len(key))
	}
	m.badMu.Lock()
	seen := m.badKeys[key]
	if !seen && len(m.badKeys) < maxBadKeys {
		m.badKeys[key] = true
	}
	m.badMu.Unlock()
	if !seen {
		klog.Warningf("ignoring etcd key %s: %v", key, err)
	}
}

// maxBadKeys bounds the memory of reported keys; past it, a new bad key is
// logged at each listing, which a flood of junk keys deserves.
const maxBadKeys = 1024
