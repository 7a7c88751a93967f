package lab

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
)

// startEtcd runs an embedded single-member etcd in the lab process,
// listening inside the hub namespace: on the hub's underlay address, where
// nodes (and, through the router, nodes on segment 2) reach it, and on the
// hub's own loopback for its peer port. A socket stays in the namespace it
// was created in, so creating the listeners on a thread switched into the
// hub is enough: StartEtcd creates them before it returns.
func startEtcd(ctx context.Context, tb *testbed.Testbed) (*embed.Etcd, error) {
	dir := filepath.Join(tb.Opts.StateDir, "etcd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("etcd dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "fl-" + tb.Name
	cfg.Dir = filepath.Join(dir, "data")
	client := url.URL{Scheme: "http", Host: net.JoinHostPort(tb.Hub.Addr.String(), strconv.Itoa(etcdClientPort))}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(etcdPeerPort))}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// The gateway dials the client URL from whatever thread runs it, which
	// is in the root namespace, where the hub's address does not exist.
	cfg.EnableGRPCGateway = false
	// A lab's data is thrown away with the lab; fsync only slows start-up.
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{etcdLogPath(tb.Opts.StateDir)}

	var e *embed.Etcd
	err := testbed.InNamespace(tb.Hub.NS, func() error {
		var err error
		e, err = embed.StartEtcd(cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s at %s: %w (see %s)", tb.Hub.NS, client.String(), err, etcdLogPath(tb.Opts.StateDir))
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", ctx.Err())
	case <-time.After(time.Minute):
		e.Close()
		return nil, fmt.Errorf("embedded etcd at %s not ready after a minute; see %s", client.String(), etcdLogPath(tb.Opts.StateDir))
	}
	return e, nil
}
