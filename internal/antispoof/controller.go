package antispoof

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/nldump"
	"github.com/flannelgo/flannel/internal/pace"
)

// DefaultBridge is the bridge the flannel CNI plugin's delegate uses
// unless its config names another.
const DefaultBridge = "cni0"

// Options configure a Controller.
type Options struct {
	// RecordDir holds the CNI plugin's records (RecordDir(subnet file)).
	RecordDir string
	// CNICacheDir is libcni's cache directory (/var/lib/cni on a node);
	// its results/ name pods added before records existed. Empty: none.
	CNICacheDir string
	// Resync is how often the whole table is compared with the records
	// and the bridge's ports, besides every port change; default 10s.
	Resync time.Duration
}

// Controller keeps the table equal to the pods of the node's bridges.
type Controller struct {
	opts  Options
	table *Table
	kick  chan struct{}

	mu     sync.Mutex
	byPort map[string]Pod // the pods of the last sync, for metrics
	warned map[string]bool
}

// NewController returns a controller writing into table.
func NewController(opts Options, table *Table) *Controller {
	if opts.Resync <= 0 {
		opts.Resync = 10 * time.Second
	}
	return &Controller{opts: opts, table: table, kick: make(chan struct{}, 1), warned: map[string]bool{}}
}

// Run syncs at once, after every link change and every Resync, until ctx
// ends. The table stays when it returns: pods must not become spoofable
// while flanneld restarts.
func (c *Controller) Run(ctx context.Context) error {
	updates := make(chan netlink.LinkUpdate, 64)
	err := netlink.LinkSubscribeWithOptions(updates, ctx.Done(), netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { klog.Errorf("anti-spoofing: link notifications: %v", err); c.changed() },
	})
	if err != nil {
		return fmt.Errorf("anti-spoofing: follow link changes: %w", err)
	}
	go func() {
		for range updates {
			c.changed()
		}
	}()
	go c.watchRecords(ctx)
	tick := pace.NewTicker(c.opts.Resync, 0.1)
	defer tick.Stop()
	c.changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		case <-c.kick:
			// A pod's veth comes with a burst of changes; one sync
			// serves them all.
			time.Sleep(50 * time.Millisecond)
		}
		err := c.Sync(ctx)
		tick.Next()
		if err != nil && ctx.Err() == nil {
			klog.Errorf("anti-spoofing: %v (retried at the next change or within %s; the pods pinned before stay pinned)", err, c.opts.Resync)
		}
	}
}

// watchRecords kicks a sync when a record comes or goes. Where the CNI
// plugin cannot pin a pod itself (no nft binary on the host), this is how
// the pod gets its entries: its frames are dropped, not let through, for
// the fraction of a second until then.
func (c *Controller) watchRecords(ctx context.Context) {
	WatchRecords(ctx, c.opts.RecordDir, c.changed)
}

func (c *Controller) changed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Sync makes the table match the records and the bridges' ports once.
func (c *Controller) Sync(ctx context.Context) error {
	pods, readErr := c.pods()
	if readErr != nil {
		klog.Warningf("anti-spoofing: %v", readErr)
	}
	bridges := []string{DefaultBridge}
	for _, p := range pods {
		if !slices.Contains(bridges, p.Bridge) {
			bridges = append(bridges, p.Bridge)
		}
	}
	var ports map[string]bool
	err := c.table.Sync(ctx, pods, func() (map[string]bool, error) {
		var err error
		ports, err = bridgePorts(bridges)
		return ports, err
	})
	if err != nil {
		return err
	}
	c.remember(pods, ports)
	return nil
}

// pods reads the records, and libcni's cache for ports that have none.
func (c *Controller) pods() ([]Pod, error) {
	return ReadPods(c.opts.RecordDir, c.opts.CNICacheDir)
}

// remember keeps the pods by port for the metrics and logs each port that
// is dropped for want of a record, once.
func (c *Controller) remember(pods []Pod, ports map[string]bool) {
	byPort := map[string]Pod{}
	for _, p := range pods {
		if ports[p.HostIf] {
			byPort[p.HostIf] = p
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byPort = byPort
	for port := range ports {
		if _, ok := byPort[port]; !ok && !c.warned[port] {
			c.warned[port] = true
			klog.Warningf("anti-spoofing: bridge port %s belongs to no pod the flannel CNI plugin added (no record in %s, no libcni cache entry): every frame it sends is dropped. Recreate the pod, or run flanneld with --anti-spoofing=false", port, c.opts.RecordDir)
		}
	}
	for port := range c.warned {
		if !ports[port] {
			delete(c.warned, port)
		}
	}
}

// podOf names the pod behind a port for the metrics.
func (c *Controller) podOf(port string) (namespace, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.byPort[port]
	return p.Namespace, p.Name
}

// bridgePorts lists the interfaces enslaved to one of the named bridges.
func bridgePorts(bridges []string) (map[string]bool, error) {
	links, err := nldump.List(func() ([]netlink.Link, error) { return netlink.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	masters := map[int]bool{}
	for _, l := range links {
		if _, ok := l.(*netlink.Bridge); ok && slices.Contains(bridges, l.Attrs().Name) {
			masters[l.Attrs().Index] = true
		}
	}
	ports := map[string]bool{}
	for _, l := range links {
		if a := l.Attrs(); masters[a.MasterIndex] && validIfName(a.Name) {
			ports[a.Name] = true
		}
	}
	return ports, nil
}
