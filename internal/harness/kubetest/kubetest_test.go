package kubetest

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

func TestMissingBinaryIsUnavailable(t *testing.T) {
	_, err := Start(context.Background(), Options{Binary: "/nonexistent/kube-apiserver"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "build-kube-apiserver.sh") {
		t.Fatalf("err = %v, want ErrUnavailable telling how to build", err)
	}
}

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a kube-apiserver; skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	begin := time.Now()
	s, err := Start(ctx, opts)
	if errors.Is(err, ErrUnavailable) {
		tbtest.Unavailable(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd + kube-apiserver ready at %s after %s", s.URL, time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() {
		pids := []int{s.kube.Pid, s.etcd.Pid}
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		for _, pid := range pids {
			// Reaped children are gone: signal 0 must find nothing.
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("pid %d still exists after Stop (kill 0: %v)", pid, err)
			}
		}
		if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state dir %s left behind", s.Dir)
		}
	})
	return s
}

// checkIdentities exercises the admin and a ServiceAccount with a narrow
// ClusterRole; dial, when set, opens the client's connections elsewhere.
func checkIdentities(t *testing.T, s *Server, configure func(kubeconfig string) kubernetes.Interface) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := configure(s.AdminKubeconfig)
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("admin get namespace default: %v", err)
	}
	kc, err := s.ServiceAccountKubeconfig(ctx, "kube-flannel", "flannel", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sa := configure(kc)
	if _, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("serviceaccount list nodes: %v", err)
	}
	_, err = sa.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("serviceaccount list pods: %v, want forbidden", err)
	}
}

func TestStartOnLoopback(t *testing.T) {
	s := start(t, Options{})
	checkIdentities(t, s, func(kubeconfig string) kubernetes.Interface {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		return kubernetes.NewForConfigOrDie(rc)
	})
}

// TestStartInNamespace runs the servers in a hub namespace bound to an
// underlay address and talks to them from a second namespace over a veth,
// the way flanneld in a testbed node would.
func TestStartInNamespace(t *testing.T) {
	tbtest.NeedRoot(t, "ip")
	tbtest.NeedRangesFree(t)
	hub, nodeNS := tbtest.NS(t, "tku-kt-hub"), tbtest.NS(t, "tku-kt-node")
	hubAddr := netip.MustParsePrefix("198.51.100.1/24")
	for _, err := range []error{
		testbed.VethPair(hub, "eth0", nodeNS, "eth0", 1500),
		testbed.AddAddress(hub, "eth0", hubAddr),
		testbed.AddAddress(nodeNS, "eth0", netip.MustParsePrefix("198.51.100.2/24")),
		testbed.LinkUp(hub, "eth0"),
		testbed.LinkUp(nodeNS, "eth0"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	s := start(t, Options{NetNS: hub, Address: netip.MustParseAddr("198.51.100.1")})
	if !strings.HasPrefix(s.URL, "https://198.51.100.1:") {
		t.Fatalf("URL %s", s.URL)
	}
	checkIdentities(t, s, func(kubeconfig string) kubernetes.Interface {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return testbed.DialInNamespace(ctx, nodeNS, network, addr)
		}
		return kubernetes.NewForConfigOrDie(rc)
	})
}
