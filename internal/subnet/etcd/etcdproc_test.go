package etcd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const etcdBinary = "/usr/bin/etcd"

// etcdServer is a real single-member etcd on 127.0.0.1 that a test can stop
// and start again on the same data directory.
type etcdServer struct {
	t          *testing.T
	dir        string
	clientPort int
	peerPort   int
	cmd        *exec.Cmd
	exited     chan struct{}
	rawCli     *clientv3.Client
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs etcd and stops it when the test ends.
func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		t.Skipf("etcd server not installed (%s: %v); install Debian's etcd-server to run this test", etcdBinary, err)
	}
	s := &etcdServer{t: t, dir: filepath.Join(t.TempDir(), "etcd"), clientPort: freePort(t), peerPort: freePort(t)}
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
	client := "http://127.0.0.1:" + strconv.Itoa(port)
	peer := "http://127.0.0.1:" + strconv.Itoa(s.peerPort)
	cmd := exec.Command(etcdBinary,
		"--name", "test",
		"--data-dir", s.dir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer,
		"--logger", "zap", "--log-level", "error",
	)
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(s.dir), "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies, etcd dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.exited)
	s.waitHealthy(client)
}

func (s *etcdServer) waitHealthy(endpoint string) {
	s.t.Helper()
	cli := newRawClient(s.t, endpoint)
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.dir), "etcd.log"))
			s.t.Fatalf("etcd exited during start-up:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("etcd at %s not healthy after 20s: %v", endpoint, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop kills the etcd process this test started, by pid.
func (s *etcdServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
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
