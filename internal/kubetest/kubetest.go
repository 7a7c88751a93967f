// Package kubetest runs a real Kubernetes API server for tests: Debian's
// etcd plus a kube-apiserver binary built from the pinned k8s.io/kubernetes
// release by scripts/build-kube-apiserver.sh. The server has RBAC on, a
// minimal set of admission plugins, an admin identity (client certificate in
// system:masters) and a ServiceAccount token signer, so tests can exercise a
// client with exactly the permissions a DaemonSet would have.
//
// Like internal/testbed it never imports package testing: everything takes a
// context and returns errors. A missing binary is reported as ErrUnavailable,
// which tests turn into a skip.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/testbed"
)

// DefaultVersion is the k8s.io/kubernetes release scripts/build-kube-apiserver.sh
// builds by default; it matches the client-go the project uses (v0.37.2).
const DefaultVersion = "v1.37.2"

// DefaultServiceCIDR keeps the API server's service range clear of the
// pod network (10.244.0.0/16) and the testbed underlays.
const DefaultServiceCIDR = "10.96.0.0/16"

var loopback = netip.MustParseAddr("127.0.0.1")

// ErrUnavailable is wrapped when a binary the server needs is missing.
var ErrUnavailable = errors.New("kube-apiserver test server unavailable")

// Options describe the server. Zero values pick the defaults.
type Options struct {
	// Binary is kube-apiserver; default $KUBE_APISERVER, else BinaryPath("").
	Binary string
	// EtcdBinary is etcd; default /usr/bin/etcd (Debian's etcd-server).
	EtcdBinary string
	// NetNS names a network namespace (as in /run/netns) to run etcd and
	// the API server in, e.g. a testbed hub, so flanneld in node namespaces
	// can reach it. Empty: the caller's namespace.
	NetNS string
	// Address is where the API server listens; default 127.0.0.1.
	Address netip.Addr
	// Port is the secure port; default a free one.
	Port int
	// Dir holds certificates, kubeconfigs, etcd data and logs; default a
	// new temporary directory, removed by Stop.
	Dir string
	// ServiceCIDR is --service-cluster-ip-range; default DefaultServiceCIDR.
	ServiceCIDR string
	// ForNodes makes a server for real kubelets and pods (`flannelctl lab
	// up --kubernetes`): the admission plugins (ServiceAccount tokens,
	// priority classes) and the endpoint reconciler of the "kubernetes"
	// Service stay on, as in a real cluster.
	ForNodes bool
	// ExtraArgs are appended to kube-apiserver's command line.
	ExtraArgs []string
}

// Server is a running etcd + kube-apiserver pair.
type Server struct {
	// URL is the API server's address, https://<Address>:<Port>.
	URL string
	// Dir is the state directory (see Options.Dir).
	Dir string
	// CAFile verifies the serving certificate.
	CAFile string
	// AdminKubeconfig authenticates as a cluster admin (system:masters).
	AdminKubeconfig string
	// APIServerLog and EtcdLog hold the servers' output.
	APIServerLog, EtcdLog string
	// SAKeyFile is the private key that signs ServiceAccount tokens (a
	// controller manager needs it).
	SAKeyFile string

	opts   Options
	pki    *pki
	ownDir bool
	etcd   *testbed.EtcdServer
	kube   *testbed.Proc
}

// BinaryPath is where scripts/build-kube-apiserver.sh puts kube-apiserver
// for version ("" means DefaultVersion).
func BinaryPath(version string) string {
	if version == "" {
		version = DefaultVersion
	}
	dir := os.Getenv("KUBE_BIN_DIR")
	if dir == "" {
		dir = "/var/cache/flannel-go/kube"
	}
	return filepath.Join(dir, "kube-apiserver-"+version)
}

// BuildScript is the path of scripts/build-kube-apiserver.sh in this
// source tree.
func BuildScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "build-kube-apiserver.sh")
}

// Build runs scripts/build-kube-apiserver.sh for DefaultVersion. It takes
// many minutes the first time and returns at once when the binary is cached.
func Build(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "bash", BuildScript(), DefaultVersion)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := string(out)
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return fmt.Errorf("%s: %w:\n%s", BuildScript(), err, tail)
	}
	return nil
}

func (o *Options) setDefaults() {
	if o.Binary == "" {
		o.Binary = os.Getenv("KUBE_APISERVER")
	}
	if o.Binary == "" {
		o.Binary = BinaryPath("")
	}
	if o.EtcdBinary == "" {
		o.EtcdBinary = "/usr/bin/etcd"
	}
	if !o.Address.IsValid() {
		o.Address = netip.MustParseAddr("127.0.0.1")
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = DefaultServiceCIDR
	}
}

// BuildEnv, set to 1, makes Start build a missing kube-apiserver of the
// default version instead of reporting it unavailable.
const BuildEnv = "KUBETEST_BUILD"

func checkBinaries(ctx context.Context, o Options) error {
	if _, err := os.Stat(o.Binary); err != nil && os.Getenv(BuildEnv) == "1" && o.Binary == BinaryPath("") {
		if berr := Build(ctx); berr != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, berr)
		}
	}
	if _, err := os.Stat(o.Binary); err != nil {
		return fmt.Errorf("%w: kube-apiserver not found at %s: build it with %s (10 to 45 minutes on 2 cores, cached afterwards), set %s=1 to have tests build it, or set KUBE_APISERVER",
			ErrUnavailable, o.Binary, BuildScript(), BuildEnv)
	}
	if _, err := os.Stat(o.EtcdBinary); err != nil {
		return fmt.Errorf("%w: etcd not found at %s: install Debian's etcd-server (scripts/setup.sh)", ErrUnavailable, o.EtcdBinary)
	}
	return nil
}

// Start runs etcd and kube-apiserver and waits until the API server is
// ready (/readyz), which on a busy machine takes tens of seconds: give ctx
// a few minutes. On error nothing is left running.
func Start(ctx context.Context, opts Options) (s *Server, err error) {
	opts.setDefaults()
	if err := checkBinaries(ctx, opts); err != nil {
		return nil, err
	}
	s = &Server{opts: opts, Dir: opts.Dir}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "kubetest-"); err != nil {
			return nil, fmt.Errorf("kubetest state dir: %w", err)
		}
		s.ownDir = true
	} else if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("kubetest state dir: %w", err)
	}
	defer func() {
		if err != nil {
			if serr := s.Stop(); serr != nil {
				klog.Errorf("clean up after failed start: %v", serr)
			}
			s = nil
		}
	}()
	// etcd listens on loopback only: just the API server talks to it.
	etcdPorts, err := testbed.FreePorts(opts.NetNS, loopback, 2)
	if err != nil {
		return s, err
	}
	if opts.Port == 0 {
		ports, err := testbed.FreePorts(opts.NetNS, opts.Address, 1)
		if err != nil {
			return s, err
		}
		opts.Port, s.opts.Port = ports[0], ports[0]
	}
	s.URL = "https://" + net.JoinHostPort(opts.Address.String(), strconv.Itoa(opts.Port))
	if s.pki, err = writePKI(s.Dir, s.servingIPs()); err != nil {
		return s, err
	}
	s.CAFile, s.SAKeyFile = s.pki.CAFile, s.pki.SAPrivate
	s.AdminKubeconfig = filepath.Join(s.Dir, "admin.kubeconfig")
	if err := writeCertKubeconfig(s.AdminKubeconfig, s.URL, s.pki); err != nil {
		return s, err
	}
	etcdURL, err := s.startEtcd(ctx, etcdPorts[0], etcdPorts[1])
	if err != nil {
		return s, err
	}
	if err := s.startAPIServer(ctx, etcdURL); err != nil {
		return s, err
	}
	return s, nil
}

// servingIPs are the addresses the serving certificate is valid for,
// including the first service IP that in-cluster clients would use.
func (s *Server) servingIPs() []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, s.opts.Address.AsSlice()}
	// Dual stack names two ranges; in-cluster clients use the first.
	first, _, _ := strings.Cut(s.opts.ServiceCIDR, ",")
	if p, err := netip.ParsePrefix(first); err == nil {
		ips = append(ips, p.Masked().Addr().Next().AsSlice())
	}
	return ips
}

// dial opens connections from inside Options.NetNS, so the caller's process
// can talk to a server that lives in another namespace.
func (s *Server) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.opts.NetNS == "" {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return testbed.DialInNamespace(ctx, s.opts.NetNS, network, addr)
}

func (s *Server) startEtcd(ctx context.Context, clientPort, peerPort int) (string, error) {
	host := loopback.String()
	s.EtcdLog = filepath.Join(s.Dir, "etcd.log")
	e, err := testbed.StartEtcdServer(ctx, testbed.EtcdOptions{
		Binary:     s.opts.EtcdBinary,
		NS:         s.opts.NetNS,
		Name:       "kubetest",
		DataDir:    filepath.Join(s.Dir, "etcd"),
		LogFile:    s.EtcdLog,
		ClientURLs: []string{"http://" + net.JoinHostPort(host, strconv.Itoa(clientPort))},
		PeerURL:    "http://" + net.JoinHostPort(host, strconv.Itoa(peerPort)),
		// Test data is thrown away; fsync would only slow every write.
		NoFsync: true,
		// A test binary killed by its timeout must not leave servers behind.
		DieWithParent: true,
	})
	if err != nil {
		return "", err
	}
	s.etcd = e
	return e.Endpoint, nil
}

func (s *Server) startAPIServer(ctx context.Context, etcdURL string) error {
	s.APIServerLog = filepath.Join(s.Dir, "kube-apiserver.log")
	argv := []string{
		s.opts.Binary,
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + s.opts.Address.String(),
		"--advertise-address=" + s.opts.Address.String(),
		"--secure-port=" + strconv.Itoa(s.opts.Port),
		"--tls-cert-file=" + s.pki.ServingCert,
		"--tls-private-key-file=" + s.pki.ServingKey,
		"--client-ca-file=" + s.pki.CAFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + s.pki.SAPublic,
		"--service-account-signing-key-file=" + s.pki.SAPrivate,
		"--service-cluster-ip-range=" + s.opts.ServiceCIDR,
		"--authorization-mode=RBAC",
		// Fewer moving parts on a 2-core machine.
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(s.Dir, "certs"),
	}
	if !s.opts.ForNodes {
		argv = append(argv,
			// Tests create bare pods and nodes: no controller manager creates
			// default ServiceAccounts, nothing enforces quotas or webhooks.
			"--disable-admission-plugins=ServiceAccount,LimitRanger,ResourceQuota,MutatingAdmissionWebhook,"+
				"ValidatingAdmissionWebhook,PodSecurity,TaintNodesByCondition,DefaultStorageClass",
			// The "kubernetes" Service endpoints would point at a loopback or
			// test address that no pod could use anyway.
			"--endpoint-reconciler-type=none")
	}
	argv = append(argv, s.opts.ExtraArgs...)
	p, err := testbed.StartProc(ctx, testbed.ProcOptions{
		NS: s.opts.NetNS, LogFile: s.APIServerLog, Role: "kube-apiserver", Argv: argv, DieWithParent: true,
	})
	if err != nil {
		return err
	}
	s.kube = p
	cs, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	return s.waitFor(ctx, p, "kube-apiserver at "+s.URL, func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		return err
	})
}

// waitFor polls ready until it succeeds, the process exits or ctx ends.
func (s *Server) waitFor(ctx context.Context, p *testbed.Proc, what string, ready func(context.Context) error) error {
	start := time.Now()
	for {
		err := ready(ctx)
		if err == nil {
			klog.V(1).Infof("kubetest: %s ready after %s", what, time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited while starting (%v); end of %s:\n%s", what, p.Wait(), p.LogFile, testbed.LogTail(p.LogFile))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w (last error: %v); end of %s:\n%s",
				what, time.Since(start).Round(time.Second), ctx.Err(), err, p.LogFile, testbed.LogTail(p.LogFile))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// AdminConfig is a client configuration with cluster-admin rights. Its
// connections are opened inside Options.NetNS when that is set.
func (s *Server) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: s.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: s.pki.CAFile, CertFile: s.pki.AdminCert, KeyFile: s.pki.AdminKey,
		},
		Dial: s.dial,
		// Tests create objects in bursts; client-side throttling would only
		// add latency to assertions with deadlines.
		QPS: 100, Burst: 200,
	}
}

// AdminClient is a clientset on AdminConfig.
func (s *Server) AdminClient() (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("admin client for %s: %w", s.URL, err)
	}
	return cs, nil
}

// Stop stops the API server, then etcd (by pid, SIGTERM then SIGKILL), and
// removes the state directory if Start created it.
func (s *Server) Stop() error {
	var errs []error
	if s.kube != nil {
		errs = append(errs, s.kube.Stop())
	}
	if s.etcd != nil {
		errs = append(errs, s.etcd.Stop())
	}
	if s.ownDir && s.Dir != "" {
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", s.Dir, err))
		}
	}
	return errors.Join(errs...)
}
