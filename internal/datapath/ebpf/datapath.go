package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/backend"
)

// Options configure a Datapath.
type Options struct {
	Cluster netip.Prefix // the cluster's IPv4 pod network
	Local   netip.Prefix // this node's IPv4 pod subnet
	// Uplink is where other nodes' pods are reached: the external
	// interface for host-gw, flannel.<VNI> for vxlan.
	Uplink string
	Bridge string // "": antispoof.DefaultBridge
	// RecordDir and CNICacheDir are where the pods' addresses and MACs
	// are read (see antispoof.ReadPods).
	RecordDir, CNICacheDir string
	// Policy, when set, names the pods a policy selects; nil: policy off.
	Policy *Selected
	// Heal sets how often the attachments are checked and counts the
	// programs re-attached.
	Heal backend.HealConfig
}

// Datapath keeps the programs attached and the pod map current.
type Datapath struct {
	opts Options
	objs *objects
	hook hook

	mu       sync.Mutex
	attached map[int]attachment // by ifindex
	uplink   int
}

// Start loads the programs, attaches them and keeps them attached until
// ctx ends; then it detaches them, and pods take the kernel path.
func Start(ctx context.Context, opts Options) (*Datapath, error) {
	if opts.Bridge == "" {
		opts.Bridge = antispoof.DefaultBridge
	}
	if !opts.Cluster.Addr().Is4() || !opts.Local.Addr().Is4() {
		return nil, errors.New(`"Datapath": "ebpf" handles IPv4 pod networks only: enable IPv4 (EnableIPv4) or set "Datapath" to "kernel"`)
	}
	objs, err := loadObjects()
	if err != nil {
		return nil, err
	}
	d := &Datapath{opts: opts, objs: objs, attached: map[int]attachment{}}
	up, err := netlink.LinkByName(opts.Uplink)
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("eBPF fast path: uplink %s: %w", opts.Uplink, err)
	}
	h, a, err := chooseHook(up.Attrs().Index, objs.ToPod)
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("eBPF fast path: attach to %s: %w", opts.Uplink, err)
	}
	d.hook, d.attached[up.Attrs().Index], d.uplink = h, a, up.Attrs().Index
	if _, err := d.reconcile(); err != nil {
		// A pod's veth going away mid-way, say: the loop retries, and
		// meanwhile the pods concerned take the kernel path.
		klog.Warningf("eBPF fast path: %v (retrying)", err)
	}
	klog.Infof("eBPF fast path on: programs attached with %s to %s and the ports of %s", h, opts.Uplink, opts.Bridge)
	go d.run(ctx)
	return d, nil
}

// run reconciles on link changes, new pod records, policy changes and
// every interval, with back-off after a failure (backend.RunHealer), until
// ctx ends; then it detaches the programs.
func (d *Datapath) run(ctx context.Context) {
	defer d.close()
	kick := backend.NewKicker()
	go d.watch(ctx, kick)
	backend.RunHealer(ctx, backend.HealLoop{
		Name: "eBPF fast path", Config: d.opts.Heal, Kick: kick, Reconcile: d.reconcile,
		// New pods' veths are no device of the healer's: watch kicks for them.
		Owned: func() *backend.Owned { return &backend.Owned{} },
	})
}

// watch kicks a reconcile when a link changes (a pod's veth comes or
// goes), a pod record is written and the policy's selection changes.
func (d *Datapath) watch(ctx context.Context, kick backend.Kicker) {
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { klog.Warningf("eBPF fast path: link notifications: %v", err) },
	}); err != nil {
		klog.Warningf("eBPF fast path: cannot follow link changes (%v); new pods are found at the next reconcile", err)
	}
	go antispoof.WatchRecords(ctx, d.opts.RecordDir, kick.Kick)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-links:
			if !ok {
				links = nil // notifications ended: records and the interval still find new pods
			}
		case <-d.opts.Policy.changed():
		}
		kick.Kick()
	}
}

// repairKind is how re-attached programs are counted among the healer's
// repairs.
const repairKind = "ebpf-program"

// reconcile attaches the programs where they are missing, detaches them
// from interfaces that are no longer the bridge's ports, and rewrites the
// settings and the pod map.
func (d *Datapath) reconcile() (backend.Repairs, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	repairs := backend.Repairs{}
	br, ports, err := bridgePorts(d.opts.Bridge)
	if err != nil {
		return repairs, err
	}
	up, err := netlink.LinkByName(d.opts.Uplink)
	if err != nil {
		return repairs, fmt.Errorf("uplink %s: %w", d.opts.Uplink, err)
	}
	want := map[int]*ebpf.Program{up.Attrs().Index: d.objs.ToPod}
	for _, idx := range ports {
		want[idx] = d.objs.FromPod
	}
	d.uplink = up.Attrs().Index
	if err := d.configure(br); err != nil {
		return repairs, err
	}
	if err := d.syncPods(ports); err != nil {
		return repairs, err
	}
	return repairs, errors.Join(d.syncAttachments(want, repairs)...)
}

func (d *Datapath) configure(br netlink.Link) error {
	known, _ := d.opts.Policy.snapshot()
	s := Settings{Cluster: d.opts.Cluster, Local: d.opts.Local, Uplink: d.uplink, AllKernel: !known}
	if br != nil {
		s.BridgeMAC = br.Attrs().HardwareAddr
	}
	return d.objs.configure(s)
}

func (d *Datapath) syncPods(ports map[string]int) error {
	pods, err := antispoof.ReadPods(d.opts.RecordDir, d.opts.CNICacheDir)
	if err != nil {
		// A damaged record costs its pod the fast path, not the others.
		klog.V(2).Infof("eBPF fast path: reading pod records: %v", err)
	}
	_, selected := d.opts.Policy.snapshot()
	return d.objs.setPods(podEntries(pods, d.opts.Bridge, ports, d.opts.Local, selected))
}

// syncAttachments makes the attachments equal to want (program by
// ifindex), counting a program found detached from where it was.
func (d *Datapath) syncAttachments(want map[int]*ebpf.Program, repairs backend.Repairs) []error {
	var errs []error
	for idx, a := range d.attached {
		if _, ok := want[idx]; !ok {
			_ = a.close()
			delete(d.attached, idx)
		}
	}
	for idx, prog := range want {
		if a, ok := d.attached[idx]; ok {
			intact, err := a.intact()
			if err != nil {
				errs = append(errs, fmt.Errorf("check the program on ifindex %d: %w", idx, err))
				continue
			}
			if intact {
				continue
			}
			_ = a.close()
			delete(d.attached, idx)
			repairs.Add(repairKind)
		}
		a, err := d.hook.attach(idx, prog)
		if err != nil {
			errs = append(errs, fmt.Errorf("attach to ifindex %d with %s: %w", idx, d.hook, err))
			continue
		}
		d.attached[idx] = a
	}
	return errs
}

// close detaches every program and unloads them.
func (d *Datapath) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for idx, a := range d.attached {
		if err := a.close(); err != nil {
			klog.Warningf("eBPF fast path: detach from ifindex %d: %v", idx, err)
		}
		delete(d.attached, idx)
	}
	d.objs.Close()
	klog.Info("eBPF fast path off: programs detached")
}
