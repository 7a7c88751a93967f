package netpol

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersnetv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Rules is where a controller puts compiled models (a Table in flanneld).
type Rules interface {
	Sync(ctx context.Context, m *Model) error
}

// ControllerOptions configure a Controller.
type ControllerOptions struct {
	Client kubernetes.Interface
	// NodeName is called until it succeeds: the pods of this node are the
	// ones the controller enforces policy for.
	NodeName func(ctx context.Context) (string, error)
	// Debounce gathers the changes of this long after the first into one
	// sync; default 50 ms. Keep it well under a second: a change must be
	// enforced within one.
	Debounce time.Duration
	Metrics  *Metrics
}

// Controller follows NetworkPolicies, Pods and Namespaces and keeps the
// node's rules equal to their compilation.
type Controller struct {
	opts    ControllerOptions
	rules   Rules
	kick    chan struct{}
	pods    listerscorev1.PodLister
	nss     listerscorev1.NamespaceLister
	pols    listersnetv1.NetworkPolicyLister
	factory informers.SharedInformerFactory
	synced  []cache.InformerSynced
}

// NewController sets up the informers; nothing runs until Run.
func NewController(opts ControllerOptions, rules Rules) *Controller {
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	f := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithTransform(strip))
	c := &Controller{opts: opts, rules: rules, kick: make(chan struct{}, 1), factory: f}
	pods, nss, pols := f.Core().V1().Pods(), f.Core().V1().Namespaces(), f.Networking().V1().NetworkPolicies()
	c.pods, c.nss, c.pols = pods.Lister(), nss.Lister(), pols.Lister()
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), pols.Informer()} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { c.changed() },
			UpdateFunc: func(old, cur any) { c.updated(old, cur) },
			DeleteFunc: func(any) { c.changed() },
		})
		c.synced = append(c.synced, inf.HasSynced)
	}
	return c
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
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("network policy: caches of pods, namespaces and networkpolicies not filled: %w", ctx.Err())
	}
	klog.Infof("network policy: following pods, namespaces and networkpolicies; enforcing for the pods of node %s", node)
	c.changed()
	retry := time.Second
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		}
		c.gather(ctx)
		if err := c.sync(ctx, node); err != nil {
			klog.Errorf("network policy: %v; retrying in %s (the previous rules stay in force)", err, retry)
			time.AfterFunc(retry, c.changed)
			retry = min(2*retry, 30*time.Second)
			continue
		}
		retry = time.Second
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
	delay := time.Second
	for {
		name, err := c.opts.NodeName(ctx)
		if err == nil {
			return name, nil
		}
		klog.Errorf("network policy: %v; retrying in %s", err, delay)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
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
	return in, nil
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
	return obj, nil
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
	return obj
}
