package netpol

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersnetv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/kubeapi"
	"github.com/flannelgo/flannel/internal/pace"
)

// Rules is where a controller puts compiled models (a Table in flanneld).
type Rules interface {
	Sync(ctx context.Context, m *Model) error
}

// ControllerOptions configure a Controller.
type ControllerOptions struct {
	// RestConfig reaches the API server; only the core/v1 and
	// networking/v1 clients are built from it.
	RestConfig *rest.Config
	// NodeName is called until it succeeds: the pods of this node are the
	// ones the controller enforces policy for.
	NodeName func(ctx context.Context) (string, error)
	// Debounce gathers the changes of this long after the first into one
	// sync; default 50 ms. Keep it well under a second: a change must be
	// enforced within one.
	Debounce time.Duration
	Metrics  *Metrics
	// CRDPoll is how often the controller looks for the
	// ClusterNetworkPolicy CRD while it is not installed; default 10 s.
	CRDPoll time.Duration
}

// Controller follows NetworkPolicies, Pods and Namespaces and keeps the
// node's rules equal to their compilation.
type Controller struct {
	opts      ControllerOptions
	rules     Rules
	kick      chan struct{}
	pods      listerscorev1.PodLister
	nss       listerscorev1.NamespaceLister
	pols      listersnetv1.NetworkPolicyLister
	informers []cache.SharedIndexInformer
	// ClusterNetworkPolicies, once their CRD is found (cnp_controller.go)
	core, cnpAPI rest.Interface
	cluster      atomic.Pointer[clusterListers]
}

// NewController sets up the informers; nothing runs until Run.
func NewController(opts ControllerOptions, rules Rules) (*Controller, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	// kubeapi's clients, not client-go's typed ones: those would link
	// every API group into flanneld (see package kubeapi).
	core, err := kubeapi.Core(opts.RestConfig)
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	netv1, err := kubeapi.Networking(opts.RestConfig)
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	cnpAPI, err := kubeapi.ClusterPolicy(opts.RestConfig)
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	if opts.CRDPoll <= 0 {
		opts.CRDPoll = 10 * time.Second
	}
	c := &Controller{opts: opts, rules: rules, kick: make(chan struct{}, 1), core: core.REST, cnpAPI: cnpAPI.REST}
	pods := c.informer(core.REST, "pods", &corev1.Pod{})
	nss := c.informer(core.REST, "namespaces", &corev1.Namespace{})
	pols := c.informer(netv1.REST, "networkpolicies", &networkingv1.NetworkPolicy{})
	c.pods = listerscorev1.NewPodLister(pods.GetIndexer())
	c.nss = listerscorev1.NewNamespaceLister(nss.GetIndexer())
	c.pols = listersnetv1.NewNetworkPolicyLister(pols.GetIndexer())
	return c, nil
}

// informer watches one resource of the whole cluster, keeping only what
// strip leaves.
func (c *Controller) informer(rc cache.Getter, resource string, obj runtime.Object) cache.SharedIndexInformer {
	inf := c.newInformer(rc, resource, obj)
	c.informers = append(c.informers, inf)
	return inf
}

func (c *Controller) newInformer(rc cache.Getter, resource string, obj runtime.Object) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(rc, resource, metav1.NamespaceAll, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	_ = inf.SetTransform(strip)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.changed() },
		UpdateFunc: func(old, cur any) { c.updated(old, cur) },
		DeleteFunc: func(any) { c.changed() },
	})
	return inf
}

func (c *Controller) changed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// updated ignores updates that change nothing the compiler reads (the
// transform has already dropped the rest, but the resource version still
// differs).
func (c *Controller) updated(old, cur any) {
	if equality.Semantic.DeepEqual(withoutVersion(old), withoutVersion(cur)) {
		return
	}
	c.changed()
}

// Run syncs once the caches are filled and then after every change, until
// ctx ends. The rules stay in the kernel when it returns: pods must not
// lose their isolation while flanneld restarts.
func (c *Controller) Run(ctx context.Context) error {
	node, err := c.nodeName(ctx)
	if err != nil {
		return err
	}
	var synced []cache.InformerSynced
	for _, inf := range c.informers {
		go inf.Run(ctx.Done())
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("network policy: caches of pods, namespaces and networkpolicies not filled: %w", ctx.Err())
	}
	klog.Infof("network policy: following pods, namespaces and networkpolicies; enforcing for the pods of node %s", node)
	go c.followClusterPolicies(ctx)
	c.changed()
	retry := pace.New(pace.Policy{Min: time.Second, Max: 30 * time.Second})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		}
		c.gather(ctx)
		if err := c.sync(ctx, node); err != nil {
			wait := retry.Next()
			klog.Errorf("network policy: %v; retrying in %s (the previous rules stay in force)", err, wait)
			time.AfterFunc(wait, c.changed)
			continue
		}
		retry.Reset()
	}
}

// gather waits out the debounce window, so a burst of changes (a
// deployment rolling) costs one sync.
func (c *Controller) gather(ctx context.Context) {
	t := time.NewTimer(c.opts.Debounce)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C:
			return
		}
	}
}

func (c *Controller) nodeName(ctx context.Context) (string, error) {
	bo := pace.New(pace.Policy{Min: time.Second, Max: 30 * time.Second})
	for {
		name, err := c.opts.NodeName(ctx)
		if err == nil {
			return name, nil
		}
		delay := bo.Next()
		klog.Errorf("network policy: %v; retrying in %s", err, delay)
		if err := ctxwait.Sleep(ctx, delay); err != nil {
			return "", err
		}
	}
}

func (c *Controller) sync(ctx context.Context, node string) error {
	start := time.Now()
	in, err := c.input()
	if err != nil {
		return err
	}
	m := Compile(in, func(p *corev1.Pod) bool { return p.Spec.NodeName == node })
	if err := c.rules.Sync(ctx, m); err != nil {
		return err
	}
	took := time.Since(start)
	if c.opts.Metrics != nil {
		c.opts.Metrics.observe(took, m)
	}
	klog.V(2).Infof("network policy: %d of %d policies apply to this node's pods, %d pods isolated for ingress, %d for egress; rules loaded in %s",
		m.PolicyCount, len(in.Policies), len(m.Rules[Ingress]), len(m.Rules[Egress]), took.Round(time.Millisecond))
	return nil
}

func (c *Controller) input() (Input, error) {
	var in Input
	var err error
	if in.Pods, err = c.pods.List(labels.Everything()); err != nil {
		return in, fmt.Errorf("list pods from cache: %w", err)
	}
	if in.Namespaces, err = c.nss.List(labels.Everything()); err != nil {
		return in, fmt.Errorf("list namespaces from cache: %w", err)
	}
	if in.Policies, err = c.pols.List(labels.Everything()); err != nil {
		return in, fmt.Errorf("list networkpolicies from cache: %w", err)
	}
	return in, c.clusterInput(&in)
}

// strip keeps of each object only what the compiler reads, so the caches
// of a large cluster stay small.
func strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		p := &corev1.Pod{}
		p.Name, p.Namespace, p.Labels, p.ResourceVersion, p.UID = o.Name, o.Namespace, o.Labels, o.ResourceVersion, o.UID
		p.Spec.NodeName, p.Spec.HostNetwork = o.Spec.NodeName, o.Spec.HostNetwork
		p.Spec.Containers = portsOnly(o.Spec.Containers)
		p.Spec.InitContainers = portsOnly(o.Spec.InitContainers)
		p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = o.Status.Phase, o.Status.PodIP, o.Status.PodIPs
		return p, nil
	case *corev1.Namespace:
		n := &corev1.Namespace{}
		n.Name, n.Labels, n.ResourceVersion, n.UID = o.Name, o.Labels, o.ResourceVersion, o.UID
		return n, nil
	case *networkingv1.NetworkPolicy:
		o.ManagedFields, o.Annotations = nil, nil
		return o, nil
	}
	return stripCluster(obj), nil
}

func portsOnly(cs []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, ctr := range cs {
		if len(ctr.Ports) > 0 {
			out = append(out, corev1.Container{Ports: ctr.Ports})
		}
	}
	return out
}

func withoutVersion(obj any) any {
	switch o := obj.(type) {
	case *corev1.Pod:
		c := *o
		c.ResourceVersion = ""
		return &c
	case *corev1.Namespace:
		c := *o
		c.ResourceVersion = ""
		return &c
	case *networkingv1.NetworkPolicy:
		c := *o
		c.ResourceVersion, c.Generation = "", 0
		return &c
	}
	return clusterWithoutVersion(obj)
}
