package etcd

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

const etcdBinary = "/usr/bin/etcd"

// etcdServer is a real single-member etcd on 127.0.0.1 (the foundation's
// launcher, testbed.StartEtcdServer) that a test can stop and start again
// on the same data directory.
type etcdServer struct {
	t          *testing.T
	dir        string
	clientPort int
	peerPort   int
	srv        *testbed.EtcdServer
	rawCli     *clientv3.Client
}

// startEtcd runs etcd and stops it when the test ends.
func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	tbtest.NeedTools(t, etcdBinary)
	ports, err := testbed.FreePorts("", netip.MustParseAddr("127.0.0.1"), 2)
	if err != nil {
		t.Fatal(err)
	}
	s := &etcdServer{t: t, dir: filepath.Join(t.TempDir(), "etcd"), clientPort: ports[0], peerPort: ports[1]}
	t.Cleanup(s.stop)
	s.start(s.clientPort)
	return s
}

func (s *etcdServer) endpoint() string { return "http://127.0.0.1:" + strconv.Itoa(s.clientPort) }

// start launches etcd serving clients on port, which need not be the port
// managers were told about: that hides etcd from them while a test changes
// data behind their back.
func (s *etcdServer) start(port int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := testbed.StartEtcdServer(ctx, testbed.EtcdOptions{
		Binary:        etcdBinary,
		DataDir:       s.dir,
		LogFile:       filepath.Join(filepath.Dir(s.dir), "etcd.log"),
		ClientURLs:    []string{"http://127.0.0.1:" + strconv.Itoa(port)},
		PeerURL:       "http://127.0.0.1:" + strconv.Itoa(s.peerPort),
		DieWithParent: true, // if the test binary dies, etcd dies with it
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.srv = srv
}

// stop kills the etcd process this test started, by pid.
func (s *etcdServer) stop() {
	if s.srv == nil {
		return
	}
	if err := s.srv.Kill(); err != nil {
		s.t.Errorf("stop etcd: %v", err)
	}
	s.srv = nil
}

func newRawClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	return cli
}

// raw returns a plain client to inspect or change etcd as an operator (or
// upstream flanneld) would.
func (s *etcdServer) raw() *clientv3.Client {
	if s.rawCli == nil {
		s.rawCli = newRawClient(s.t, s.endpoint())
		s.t.Cleanup(func() { s.rawCli.Close() })
	}
	return s.rawCli
}

func (s *etcdServer) put(key, value string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.raw().Put(ctx, key, value); err != nil {
		s.t.Fatalf("put %s: %v", key, err)
	}
}

func (s *etcdServer) manager(t *testing.T, opts Options) *Manager {
	t.Helper()
	opts.Endpoints = []string{s.endpoint()}
	m, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func (s *etcdServer) String() string { return fmt.Sprintf("etcd at %s", s.endpoint()) }

// freePort is a TCP port on 127.0.0.1 nobody listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ports, err := testbed.FreePorts("", netip.MustParseAddr("127.0.0.1"), 1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}
