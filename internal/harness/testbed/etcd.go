package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
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
	e, err := StartEtcdServer(ctx, EtcdOptions{
		Binary:     tb.Opts.EtcdPath,
		NS:         tb.Hub.NS,
		Name:       "fl-" + tb.Name,
		DataDir:    filepath.Join(tb.etcdDir(), "data"),
		LogFile:    tb.EtcdLogFile(),
		ClientURLs: []string{tb.EtcdEndpoint(), fmt.Sprintf("http://127.0.0.1:%d", etcdPort)},
		PeerURL:    "http://127.0.0.1:2380",
		Recorder:   tb.Opts.Recorder,
	})
	if err != nil {
		return err
	}
	tb.mu.Lock()
	tb.etcd = e.Proc
	tb.procs[e.Proc] = struct{}{}
	tb.mu.Unlock()
	klog.Infof("testbed %s: etcd up at %s (log %s)", tb.Name, tb.EtcdEndpoint(), tb.EtcdLogFile())
	return nil
}

// EtcdOptions describe an etcd server for StartEtcdServer.
type EtcdOptions struct {
	// Binary is etcd; default /usr/bin/etcd (Debian's etcd-server).
	Binary string
	// NS is the network namespace to run in; "" is the caller's.
	NS string
	// Name is the member name; default "test".
	Name    string
	DataDir string
	LogFile string
	// ClientURLs are listened on; the first is advertised and answers the
	// readiness check.
	ClientURLs []string
	PeerURL    string
	// NoFsync speeds up servers whose data is thrown away.
	NoFsync bool
	// Recorder and DieWithParent: see ProcOptions.
	Recorder      ProcRecorder
	DieWithParent bool
}

// EtcdServer is a running etcd started by StartEtcdServer.
type EtcdServer struct {
	*Proc
	// Endpoint is the first client URL.
	Endpoint string
	ns       string
}

// StartEtcdServer is the one launcher of etcd servers for the testbed and
// the tests (a single member, the Debian binary): it starts etcd under
// StartProc and waits until it answers on its first client URL. On error
// nothing is left running.
func StartEtcdServer(ctx context.Context, o EtcdOptions) (*EtcdServer, error) {
	if o.Binary == "" {
		o.Binary = "/usr/bin/etcd"
	}
	if o.Name == "" {
		o.Name = "test"
	}
	if len(o.ClientURLs) == 0 || o.PeerURL == "" {
		return nil, fmt.Errorf("start etcd: no client or peer URL")
	}
	argv := []string{
		o.Binary,
		"--name=" + o.Name,
		"--data-dir=" + o.DataDir,
		"--listen-client-urls=" + strings.Join(o.ClientURLs, ","),
		"--advertise-client-urls=" + o.ClientURLs[0],
		"--listen-peer-urls=" + o.PeerURL,
		"--initial-advertise-peer-urls=" + o.PeerURL,
		"--initial-cluster=" + o.Name + "=" + o.PeerURL,
		"--logger=zap",
		"--log-outputs=stderr",
	}
	if o.NoFsync {
		argv = append(argv, "--unsafe-no-fsync")
	}
	p, err := StartProc(ctx, ProcOptions{NS: o.NS, LogFile: o.LogFile, Role: roleEtcd, Argv: argv,
		Recorder: o.Recorder, DieWithParent: o.DieWithParent})
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	e := &EtcdServer{Proc: p, Endpoint: o.ClientURLs[0], ns: o.NS}
	if err := e.wait(ctx); err != nil {
		if serr := p.Stop(); serr != nil {
			klog.Errorf("stop etcd that did not come up: %v", serr)
		}
		return nil, err
	}
	return e, nil
}

// Client returns a client of the server, usable from the calling process.
func (e *EtcdServer) Client(ctx context.Context) (*clientv3.Client, error) {
	return NewEtcdClient(ctx, e.ns, e.Endpoint)
}

func (e *EtcdServer) wait(ctx context.Context) error {
	cli, err := e.Client(ctx)
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
		case <-e.Done():
			return fmt.Errorf("etcd exited while starting: %v; see %s:\n%s", e.Wait(), e.LogFile, LogTail(e.LogFile))
		case <-ctx.Done():
			return fmt.Errorf("etcd did not answer at %s: %w (last error: %v); see %s", e.Endpoint, ctx.Err(), err, e.LogFile)
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
	return NewEtcdClient(ctx, tb.Hub.NS, tb.EtcdEndpoint())
}

// NewEtcdClient returns a client of endpoints whose connections are opened
// inside namespace ns ("" is the caller's).
func NewEtcdClient(ctx context.Context, ns string, endpoints ...string) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Context:     ctx,
		Logger:      zap.NewNop(), // its retry warnings would drown test output
	}
	if ns != "" {
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			return DialInNamespace(ctx, ns, "tcp", addr)
		}
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(dial)}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}

// FreePorts finds n free TCP ports on addr inside namespace ns ("" is the
// caller's). They are released before use; nothing else in a test
// namespace races for them, and on the host the window is milliseconds.
func FreePorts(ns string, addr netip.Addr, n int) ([]int, error) {
	var ports []int
	find := func() error {
		var ls []net.Listener
		defer func() {
			for _, l := range ls {
				l.Close()
			}
		}()
		for range n {
			l, err := net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
			if err != nil {
				return fmt.Errorf("find a free port on %s: %w", addr, err)
			}
			ls = append(ls, l)
			ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		}
		return nil
	}
	if ns == "" {
		return ports, find()
	}
	return ports, InNamespace(ns, find)
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
