package kube

import (
	"context"
	"fmt"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/pace"
)

// WatchLeases follows every node through an informer; see subnet.Manager.
// A node is a lease once it carries this prefix's annotations with
// kube-subnet-manager "true" and has a pod CIDR; this node is included,
// the daemon filters it out. The informer re-lists by itself after a gap,
// and events are computed from its cache by node name, so the receiver is
// told the difference between what it was sent and what is there now.
func (m *Manager) WatchLeases(ctx context.Context, events chan<- []lease.Event) error {
	cfg, err := m.watchConfig(ctx)
	if err != nil {
		return err
	}
	inf := cache.NewSharedIndexInformer(m.nodeListWatch(), &corev1.Node{}, 0, cache.Indexers{})
	if err := inf.SetTransform(m.keys.slim); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	dirty := newDirtySet()
	if err := inf.SetWatchErrorHandlerWithContext(listErrorReporter()); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { dirty.addObj(obj) },
		UpdateFunc: func(_, obj any) { dirty.addObj(obj) },
		DeleteFunc: func(obj any) { dirty.addObj(obj) },
	}); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { inf.RunWithContext(wctx) })
	defer func() {
		cancel()
		running.Wait()
	}()
	if !cache.WaitForCacheSync(wctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	w := newNodeWatcher(m.keys, cfg, inf.GetStore())
	dirty.take() // the snapshot below covers them
	if err := send(ctx, events, w.snapshot()); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-dirty.ready:
		}
		if batch := w.refresh(dirty.take()); len(batch) > 0 {
			if err := send(ctx, events, batch); err != nil {
				return err
			}
		}
	}
}

// watchConfig is the network config the leases are cut to: the one
// AcquireLease used, or else read now, retrying until it is readable.
func (m *Manager) watchConfig(ctx context.Context) (*config.Config, error) {
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()
	if cfg != nil {
		return cfg, nil
	}
	bo := pace.New(pace.Policy{Min: time.Second, Max: 30 * time.Second})
	for {
		cfg, err := m.GetNetworkConfig(ctx)
		if err == nil {
			return cfg, nil
		}
		wait := bo.Next()
		klog.Errorf("watch leases: %v; retrying in %s", err, wait)
		if err := ctxwait.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// nodeListWatch lists and watches all nodes through the core/v1 client.
func (m *Manager) nodeListWatch() *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return m.listSlim(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return m.api.watchNodes(ctx, opts)
		},
	}
}

// listPage is how many nodes one list request returns. Production nodes
// are 10-20 KiB each: a page is a few MiB to read and decode.
const listPage = 250

// listSlim lists all nodes page by page and slims each page before
// reading the next, so that memory at start-up holds one page of full
// nodes, not the whole cluster: a single list of 5000 nodes is a response
// body of about 60 MiB and twice that decoded. A list at "any version"
// (resourceVersion 0, which the API server answers from its cache in one
// piece, ignoring the limit) is made a paginated list of the latest.
func (m *Manager) listSlim(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	opts.Limit = listPage
	if opts.ResourceVersion == "0" {
		opts.ResourceVersion, opts.ResourceVersionMatch = "", ""
	}
	out := &corev1.NodeList{}
	for {
		page, err := m.api.listNodes(ctx, opts)
		if err != nil {
			return nil, err
		}
		for i := range page.Items {
			slim, _ := m.keys.slim(&page.Items[i])
			out.Items = append(out.Items, *slim.(*corev1.Node))
		}
		out.ResourceVersion = page.ResourceVersion
		if page.Continue == "" {
			return out, nil
		}
		// Later pages come from the first page's snapshot.
		opts.Continue, opts.ResourceVersion, opts.ResourceVersionMatch = page.Continue, "", ""
	}
}

func send(ctx context.Context, out chan<- []lease.Event, batch []lease.Event) error {
	select {
	case out <- batch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// slim keeps of a node only what nodeLease reads: the name, the pod CIDRs
// and the annotations under this prefix. A production Node is tens of KiB
// (images, conditions, managed fields, labels, other tools' annotations);
// the cache then holds a few hundred bytes per node, and the decoded object
// is garbage at once (scripts/scale.sh, kube mode).
func (k keys) slim(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	out.Spec.PodCIDR, out.Spec.PodCIDRs = n.Spec.PodCIDR, n.Spec.PodCIDRs
	for key, v := range n.Annotations {
		if strings.HasPrefix(key, k.prefix) {
			if out.Annotations == nil {
				out.Annotations = make(map[string]string, 8)
			}
			out.Annotations[key] = v
		}
	}
	return out, nil
}

// listErrorReporter turns the reflector's silent retries into one clear
// line when RBAC forbids listing or watching nodes.
func listErrorReporter() cache.WatchErrorHandlerWithContext {
	var once sync.Once
	return func(ctx context.Context, r *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) {
			once.Do(func() {
				klog.Errorf("%v; retrying", apiError("list and watch", "nodes", "", err))
			})
			return
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
}

// dirtySet collects the names of nodes that changed since the last batch.
// Informer handlers must not block, so they only mark names here; the
// watch loop reads the cache for the current state of each.
type dirtySet struct {
	mu    sync.Mutex
	names map[string]struct{}
	ready chan struct{} // holds a token while names is non-empty
}

func newDirtySet() *dirtySet {
	return &dirtySet{names: map[string]struct{}{}, ready: make(chan struct{}, 1)}
}

func (d *dirtySet) addObj(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		klog.Warningf("node informer: object without a key: %v", err)
		return
	}
	d.mu.Lock()
	d.names[key] = struct{}{}
	d.mu.Unlock()
	select {
	case d.ready <- struct{}{}:
	default:
	}
}

func (d *dirtySet) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.names))
	for n := range d.names {
		out = append(out, n)
	}
	clear(d.names)
	slices.Sort(out)
	return out
}

// nodeWatcher remembers what the receiver was told of each node's lease.
type nodeWatcher struct {
	keys  keys
	cfg   *config.Config
	store cache.Store
	known map[string]sent   // by node name
	bad   map[string]string // node name -> last reported problem
	seed  maphash.Seed
}

// sent is a node's lease as far as a later event needs it: the subnets,
// which name a removal, and a digest of the attributes, to tell a change.
// The attributes themselves are the daemon's lease set's to keep
// (subnet.Manager.WatchLeases); a whole lease per node here cost about
// 300 bytes each.
type sent struct {
	v4, v6 netip.Prefix
	digest uint64
}

func newNodeWatcher(k keys, cfg *config.Config, store cache.Store) *nodeWatcher {
	return &nodeWatcher{keys: k, cfg: cfg, store: store, known: map[string]sent{}, bad: map[string]string{}, seed: maphash.MakeSeed()}
}

func (w *nodeWatcher) record(l lease.Lease) sent {
	return sent{v4: l.Subnet, v6: l.IPv6Subnet, digest: l.Attrs.Digest(w.seed)}
}

func (s sent) removal() lease.Event {
	return lease.Event{Type: lease.Removed, Lease: lease.Lease{Subnet: s.v4, IPv6Subnet: s.v6}}
}

// snapshot is the first batch: every current lease as Added, possibly none.
func (w *nodeWatcher) snapshot() []lease.Event {
	names := w.store.ListKeys()
	slices.Sort(names)
	batch := w.refresh(names)
	if batch == nil {
		batch = []lease.Event{}
	}
	return batch
}

// refresh compares the named nodes' current leases with what was sent.
// Removals come first: a node whose subnet changed must lose its old route
// before the new one is added.
func (w *nodeWatcher) refresh(names []string) []lease.Event {
	var removed, added []lease.Event
	for _, name := range names {
		cur, ok := w.current(name)
		old, had := w.known[name]
		if !ok {
			if had {
				delete(w.known, name)
				removed = append(removed, old.removal())
			}
			continue
		}
		now := w.record(cur)
		if had && now == old {
			continue
		}
		w.known[name] = now
		if had && (old.v4 != now.v4 || old.v6 != now.v6) {
			removed = append(removed, old.removal())
		}
		added = append(added, lease.Event{Type: lease.Added, Lease: cur})
	}
	return append(removed, added...)
}

// current is the node's lease as the cache has it now; false when the
// node is gone or not a usable flannel node.
func (w *nodeWatcher) current(name string) (lease.Lease, bool) {
	obj, exists, err := w.store.GetByKey(name)
	if err != nil || !exists {
		delete(w.bad, name)
		return lease.Lease{}, false
	}
	node, isNode := obj.(*corev1.Node)
	if !isNode {
		return lease.Lease{}, false
	}
	l, ok, err := w.keys.nodeLease(node, w.cfg)
	if err != nil {
		w.reportBad(name, err)
		return lease.Lease{}, false
	}
	delete(w.bad, name)
	return l, ok
}

// reportBad logs a node's problem once, not at every update of the node.
func (w *nodeWatcher) reportBad(name string, err error) {
	msg := err.Error()
	if w.bad[name] == msg {
		return
	}
	w.bad[name] = msg
	klog.Warningf("ignoring node %q: %v", name, err)
}
