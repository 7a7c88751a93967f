// Package kube is the subnet manager for --kube-subnet-mgr: the Kubernetes
// API is the datastore. A node's subnet is the pod CIDR that
// kube-controller-manager (or kubeadm) assigned to its Node object, and each
// node publishes how to reach it in annotations under
// --kube-annotation-prefix, with the same names and values as upstream
// flannel so both can run in one cluster. The network configuration comes
// from a file (--net-config-path), normally the kube-flannel-cfg ConfigMap.
package kube

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnet"
	"github.com/flannelgo/flannel/internal/version"
)

// DefaultNetConfPath is upstream's --net-config-path default.
const DefaultNetConfPath = "/etc/kube-flannel/net-conf.json"

// leaseLifetime is the nominal lifetime of a lease. Node objects do not
// expire; the value only spaces out RenewLease calls, each of which
// re-publishes the annotations should someone have removed them.
const leaseLifetime = 24 * time.Hour

// requestTimeout bounds each single API call.
const requestTimeout = 30 * time.Second

// Options configure the manager; they map to flanneld's flags and the
// downward-API environment of the DaemonSet pod.
type Options struct {
	APIURL     string // --kube-api-url
	Kubeconfig string // --kubeconfig-file; in-cluster config when both are empty
	// RestConfig, when set, is used instead of APIURL and Kubeconfig (tests,
	// embedding).
	RestConfig *rest.Config

	AnnotationPrefix string // --kube-annotation-prefix
	NetConfPath      string // --net-config-path

	NodeName     string // $NODE_NAME
	PodName      string // $POD_NAME, used when NodeName is empty
	PodNamespace string // $POD_NAMESPACE

	// SetNodeNetworkUnavailable makes MarkReady set the node's
	// NetworkUnavailable condition to False (--set-node-network-unavailable).
	SetNodeNetworkUnavailable bool
}

// Manager implements subnet.Manager on the Kubernetes API.
type Manager struct {
	opts Options
	keys keys
	cs   kubernetes.Interface

	mu        sync.Mutex
	nodeName  string             // resolved once
	published map[string]*string // what AcquireLease last wrote
	cfg       *config.Config     // last successfully read net-conf
}

var _ subnet.Manager = (*Manager)(nil)

// New prepares a manager. It does not contact the API server.
func New(opts Options) (*Manager, error) {
	if opts.AnnotationPrefix == "" {
		opts.AnnotationPrefix = DefaultAnnotationPrefix
	}
	if opts.NetConfPath == "" {
		opts.NetConfPath = DefaultNetConfPath
	}
	k, err := newKeys(opts.AnnotationPrefix)
	if err != nil {
		return nil, err
	}
	if v, ok := os.LookupEnv("EVENT_QUEUE_DEPTH"); ok {
		// Upstream sizes a channel of node events with it; here node
		// changes are coalesced per node (see dirtySet), so nothing can
		// overflow and there is nothing to size.
		klog.Infof("EVENT_QUEUE_DEPTH=%s is not used: node changes are coalesced per node, so there is no event queue to size", v)
	}
	rc, err := restConfig(opts)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", rc.Host, err)
	}
	return &Manager{opts: opts, keys: k, cs: cs}, nil
}

func restConfig(opts Options) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	switch {
	case opts.RestConfig != nil:
		rc = rest.CopyConfig(opts.RestConfig)
	case opts.APIURL == "" && opts.Kubeconfig == "":
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config: %w (outside a pod, set --kube-api-url or --kubeconfig-file)", err)
		}
	default:
		if rc, err = clientcmd.BuildConfigFromFlags(opts.APIURL, opts.Kubeconfig); err != nil {
			return nil, fmt.Errorf("kubernetes client config (--kube-api-url %q, --kubeconfig-file %q): %w", opts.APIURL, opts.Kubeconfig, err)
		}
	}
	rc.UserAgent = "flanneld/" + version.Version
	return rc, nil
}

// Name identifies the manager in logs.
func (m *Manager) Name() string { return "kube" }

// GetNetworkConfig reads and validates the net-conf file. It is read on
// every call, so an operator who fixes the file need not restart flanneld
// while it retries.
func (m *Manager) GetNetworkConfig(ctx context.Context) (*config.Config, error) {
	cfg, err := readNetConf(m.opts.NetConfPath)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
	return cfg, nil
}

func readNetConf(path string) (*config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// The path leads the message once, not twice as in a *PathError.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("failed to read net conf: %s: %w (mount the kube-flannel-cfg ConfigMap there or set --net-config-path)", path, err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		const prefix = "error parsing subnet config: "
		msg := err.Error()
		if !strings.HasPrefix(msg, prefix) {
			return nil, fmt.Errorf("%s%w (in %s)", prefix, err, path)
		}
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return cfg, nil
}

// RenewLease extends the nominal lifetime. Node annotations do not expire,
// but the daemon also renews when it sees its own lease vanish, so this
// re-publishes the annotations if they were removed or changed.
func (m *Manager) RenewLease(ctx context.Context, l *lease.Lease) error {
	name, err := m.resolveNodeName(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	want := m.published
	m.mu.Unlock()
	if want != nil {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		node, err := m.cs.CoreV1().Nodes().Get(rctx, name, metav1.GetOptions{})
		if err != nil {
			return apiError("get", "nodes", name, err)
		}
		if err := m.patchAnnotations(ctx, name, changes(node.Annotations, want)); err != nil {
			return err
		}
	}
	l.Expiration = time.Now().Add(leaseLifetime)
	return nil
}

// resolveNodeName finds this node's name: NODE_NAME, else the node the
// flannel pod (POD_NAMESPACE/POD_NAME) was scheduled to.
func (m *Manager) resolveNodeName(ctx context.Context) (string, error) {
	m.mu.Lock()
	name := m.nodeName
	m.mu.Unlock()
	if name != "" {
		return name, nil
	}
	name = m.opts.NodeName
	if name == "" {
		if m.opts.PodName == "" || m.opts.PodNamespace == "" {
			return "", errors.New("cannot tell which node this is: set NODE_NAME (downward API spec.nodeName), or POD_NAME and POD_NAMESPACE")
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		pod, err := m.cs.CoreV1().Pods(m.opts.PodNamespace).Get(rctx, m.opts.PodName, metav1.GetOptions{})
		if err != nil {
			return "", apiError("get", "pods", m.opts.PodNamespace+"/"+m.opts.PodName, err)
		}
		if pod.Spec.NodeName == "" {
			return "", fmt.Errorf("pod %s/%s is not scheduled to a node yet (spec.nodeName is empty)", m.opts.PodNamespace, m.opts.PodName)
		}
		name = pod.Spec.NodeName
	}
	m.mu.Lock()
	m.nodeName = name
	m.mu.Unlock()
	return name, nil
}

// apiError names the verb and resource flanneld lacks when RBAC refuses,
// since the API server's own message names the user but not the fix.
func apiError(verb, resource, name string, err error) error {
	// Named like the API server names objects: `nodes "n1"`, also when the
	// verb is on a subresource (nodes/status).
	what, _, _ := strings.Cut(resource, "/")
	if name != "" {
		what = fmt.Sprintf("%s %q", what, name)
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s is forbidden: flanneld needs %q on %q: grant it in the ClusterRole bound to flanneld's ServiceAccount (see deploy/kube-flannel.yml): %w",
			what, verb, resource, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s %s: the API server rejected flanneld's credentials (check --kubeconfig-file, or the pod's ServiceAccount token): %w", verb, what, err)
	}
	return fmt.Errorf("%s %s: %w", verb, what, err)
}
