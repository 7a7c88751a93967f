package testbed

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

const (
	roleEtcd     = "etcd"
	roleFlanneld = "flanneld-"
	etcdPort     = 2379
	// DefaultEtcdPrefix is flannel's default --etcd-prefix.
	DefaultEtcdPrefix = "/coreos.com/network"
)

// EtcdEndpoint is etcd's client URL as nodes see it: the hub's underlay
// address.
func (tb *Testbed) EtcdEndpoint() string {
	return fmt.Sprintf("http://%s", net.JoinHostPort(tb.Hub.Addr.String(), fmt.Sprint(etcdPort)))
}

func (tb *Testbed) etcdDir() string { return filepath.Join(tb.Opts.StateDir, "etcd") }

// EtcdLogFile is where etcd's output goes.
func (tb *Testbed) EtcdLogFile() string { return filepath.Join(tb.etcdDir(), "etcd.log") }

// StartEtcd runs etcd in the hub namespace, listening on the hub's
// underlay address and on the hub's own loopback, and waits until it
// answers. A restart reuses the data dir. It is a no-op while etcd runs.
func (tb *Testbed) StartEtcd(ctx context.Context) error {
	tb.mu.Lock()
	running := tb.etcd != nil && tb.etcd.Running()
	tb.mu.Unlock()
	if running {
		return nil
	}
	member := "fl-" + tb.Name
	peer := "http://127.0.0.1:2380"
	argv := []string{
		tb.Opts.EtcdPath,
		"--name=" + member,
		"--data-dir=" + filepath.Join(tb.etcdDir(), "data"),
		"--listen-client-urls=" + tb.EtcdEndpoint() + fmt.Sprintf(",http://127.0.0.1:%d", etcdPort),
		"--advertise-client-urls=" + tb.EtcdEndpoint(),
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=" + member + "=" + peer,
		"--logger=zap",
		"--log-outputs=stderr",
	}
	p, err := tb.startProc(ctx, procSpec{ns: tb.Hub.NS, logFile: tb.EtcdLogFile(), role: roleEtcd, argv: argv})
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	tb.mu.Lock()
	tb.etcd = p
	tb.mu.Unlock()
	if err := tb.waitEtcd(ctx, p); err != nil {
		if serr := p.Stop(); serr != nil {
			klog.Errorf("stop etcd that did not come up: %v", serr)
		}
		return err
	}
	klog.Infof("lab %s: etcd up at %s (log %s)", tb.Name, tb.EtcdEndpoint(), tb.EtcdLogFile())
	return nil
}

func (tb *Testbed) waitEtcd(ctx context.Context, p *Proc) error {
	cli, err := tb.EtcdClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("etcd exited while starting: %v; see %s:\n%s", p.Wait(), tb.EtcdLogFile(), logTail(tb.EtcdLogFile()))
		case <-ctx.Done():
			return fmt.Errorf("etcd did not answer at %s: %w (last error: %v); see %s", tb.EtcdEndpoint(), ctx.Err(), err, tb.EtcdLogFile())
		case <-time.After(pollEvery):
		}
	}
}

// StopEtcd stops etcd (SIGTERM, then SIGKILL after 10 s). Its data stays.
func (tb *Testbed) StopEtcd() error {
	tb.mu.Lock()
	p := tb.etcd
	tb.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Stop(); err != nil {
		return fmt.Errorf("stop etcd: %w", err)
	}
	return nil
}

// EtcdClient returns a client usable from the calling (root-namespace)
// process: its connections are opened inside the hub namespace, since a
// socket stays in the namespace it was created in.
func (tb *Testbed) EtcdClient(ctx context.Context) (*clientv3.Client, error) {
	hub := tb.Hub.NS
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return DialInNamespace(ctx, hub, "tcp", addr)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{tb.EtcdEndpoint()},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Context:     ctx,
		Logger:      zap.NewNop(), // its retry warnings would drown test output
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", tb.EtcdEndpoint(), err)
	}
	return cli, nil
}

// DialInNamespace opens a connection from inside the named namespace.
func DialInNamespace(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer h.Close()
	var conn net.Conn
	err = inHandle(h, ns, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// PutConfig writes the network configuration to <prefix>/config
// (prefix "" means flannel's default /coreos.com/network).
func (tb *Testbed) PutConfig(ctx context.Context, prefix, config string) error {
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	cli, err := tb.EtcdClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	key := strings.TrimSuffix(prefix, "/") + "/config"
	if _, err := cli.Put(ctx, key, config); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}
