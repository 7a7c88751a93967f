// Package testbed builds real multi-node flannel clusters out of network
// namespaces on one machine: an underlay (one or two L2 segments, with a
// router namespace between them), nodes, pods, etcd and flanneld processes.
// It serves the end-to-end tests and `flannelctl lab`, so it never depends
// on package testing: everything takes a context and returns errors. It only
// builds clusters: keeping a record of one so that another process can find
// it again is internal/tools/lab's job, through the Recorder hook.
//
// Nothing is ever created in the caller's (root) namespace: veth pairs are
// created directly between the namespaces they join. Every namespace of a
// testbed called NAME is named fl-NAME-<role>, so several testbeds coexist
// and a crashed one can be removed by name (Remove).
package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"k8s.io/klog/v2"
)

// Defaults for Options.
const (
	DefaultUnderlayMTU = 1500
	// maxHostOctet keeps node addresses below the outside host (.200) and
	// the router (.254).
	maxHostOctet = 199
)

// Options describe a testbed.
type Options struct {
	// Name is a short testbed name, [a-z0-9]{1,12}; namespaces are fl-<Name>-*.
	// (`flannelctl lab` keeps names to 6 characters; tests append a tag.)
	Name string
	// Nodes is the number of nodes New creates (more can join with AddNode).
	Nodes int
	// Segments is 1 (one L2 underlay) or 2 (two L2 segments joined by a
	// router namespace; odd nodes on segment 1, even nodes on segment 2).
	Segments int
	// UnderlayMTU is the MTU of the underlay bridges and node eth0.
	UnderlayMTU int
	// IPv6 adds an IPv6 underlay next to the IPv4 one.
	IPv6 bool
	// StateDir holds the nodes' subnet files and logs and etcd's data
	// (required).
	StateDir string
	// FlanneldPath is the flanneld binary; default: "flanneld" from PATH.
	FlanneldPath string
	// EtcdPath is the etcd binary; default /usr/bin/etcd.
	EtcdPath string
	// KeepState leaves logs, subnet files and etcd data in StateDir on
	// Close, for a post-mortem; the next New there starts afresh.
	KeepState bool
	// Recorder, if set, is told about every change of the topology and
	// every process start and exit (`flannelctl lab` keeps a record for
	// its other commands); tests leave it nil.
	Recorder Recorder `json:"-"`
}

// Recorder keeps a record of a testbed for a program that must find it
// again from another process (internal/tools/lab). Topology gets the testbed's
// layout as JSON (FromTopology reads it back) after every change, with the
// testbed locked: it must not call the testbed.
type Recorder interface {
	ProcRecorder
	Topology(data []byte) error
}

// Host is a namespace with an underlay address.
type Host struct {
	Name  string     // role inside the testbed: hub, rtr, out, n1, ...
	NS    string     // network namespace, fl-<testbed>-<Name>
	Addr  netip.Addr // IPv4 underlay address
	Addr6 netip.Addr // IPv6 underlay address; invalid without Options.IPv6
}

// Node is a cluster node: a namespace with eth0 on the underlay, where
// flanneld runs and pods attach.
type Node struct {
	Host
	Index      int    // 1-based
	Segment    int    // 1 or 2
	Iface      string // underlay interface inside NS ("eth0")
	Dir        string // per-node state directory
	SubnetFile string // subnet.env written by this node's flanneld
	LogFile    string // flanneld's stdout+stderr
	Pods       []*Pod // changed by AddPod/RemovePod under the testbed's lock
	// FlanneldPath is this node's flanneld binary, when it is not
	// Options.FlanneldPath (an upstream flanneld among ours, say).
	FlanneldPath string `json:",omitempty"`

	flanneld *Proc
}

// Pod is a pod namespace attached to a node.
type Pod struct {
	Name  string // n<i>-p<j>
	NS    string
	Index int   // 1-based within its node
	Node  *Node `json:"-"`
	IP    netip.Addr
	IP6   netip.Addr
}

// Testbed is one cluster of namespaces, a test's or a `flannelctl lab`'s.
// Its methods are safe for concurrent use.
type Testbed struct {
	Name    string
	Opts    Options
	Hub     *Host
	Router  *Host
	Outside *Host
	Nodes   []*Node

	// PodNetworker wires pods to their node; New sets a hand-made one
	// (bridge cni0 + veth). Replace it before AddPod to use a CNI plugin.
	PodNetworker PodNetworker `json:"-"`

	mu    sync.Mutex
	procs map[*Proc]struct{}
	etcd  *Proc
}

var testbedName = regexp.MustCompile(`^[a-z0-9]{1,12}$`)

func (o *Options) setDefaults() error {
	if !testbedName.MatchString(o.Name) {
		return fmt.Errorf("testbed name %q: use 1 to 12 characters a-z, 0-9", o.Name)
	}
	if o.Segments == 0 {
		o.Segments = 1
	}
	if o.Segments != 1 && o.Segments != 2 {
		return fmt.Errorf("testbed %s: segments must be 1 or 2, not %d", o.Name, o.Segments)
	}
	if o.Nodes < 0 || 10+o.Nodes > maxHostOctet {
		return fmt.Errorf("testbed %s: nodes must be between 0 and %d", o.Name, maxHostOctet-10)
	}
	if o.UnderlayMTU == 0 {
		o.UnderlayMTU = DefaultUnderlayMTU
	}
	if o.UnderlayMTU < 1280 || o.UnderlayMTU > 65535 {
		return fmt.Errorf("testbed %s: underlay MTU %d out of range 1280..65535", o.Name, o.UnderlayMTU)
	}
	if o.StateDir == "" {
		return fmt.Errorf("testbed %s: no state directory (Options.StateDir)", o.Name)
	}
	if o.EtcdPath == "" {
		o.EtcdPath = "/usr/bin/etcd"
	}
	return nil
}

// nsPrefix is the prefix of every namespace of the testbed called name.
func nsPrefix(name string) string { return "fl-" + name + "-" }

func (tb *Testbed) nsName(role string) string { return nsPrefix(tb.Name) + role }

// New builds the underlay, the router (with two segments) and opts.Nodes
// nodes. It first checks that the testbed's address ranges are free on this
// machine and that no namespace of a testbed with this name is left over. On
// any error it removes whatever it made.
func New(ctx context.Context, opts Options) (*Testbed, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := CheckRangesFree(opts.Name); err != nil {
		return nil, err
	}
	// What is left is the kept state of a closed testbed: start afresh (an old
	// etcd data dir would bring back old leases).
	if err := removeState(opts.StateDir, false); err != nil {
		return nil, fmt.Errorf("testbed %s: %w", opts.Name, err)
	}
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed %s: create state dir: %w", opts.Name, err)
	}
	tb := &Testbed{Name: opts.Name, Opts: opts, PodNetworker: HandWired{}, procs: map[*Proc]struct{}{}}
	if err := tb.build(ctx); err != nil {
		if cerr := tb.Close(context.WithoutCancel(ctx)); cerr != nil {
			klog.Errorf("testbed %s: removing a half-built testbed: %v", tb.Name, cerr)
		}
		return nil, fmt.Errorf("testbed %s: %w", opts.Name, err)
	}
	klog.Infof("testbed %s: %d nodes on %d segment(s), state in %s", tb.Name, len(tb.Nodes), opts.Segments, opts.StateDir)
	return tb, nil
}

func (tb *Testbed) build(ctx context.Context) error {
	if err := tb.buildHub(); err != nil {
		return err
	}
	if tb.Opts.Segments == 2 {
		if err := tb.buildRouter(); err != nil {
			return err
		}
	}
	for i := 0; i < tb.Opts.Nodes; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := tb.AddNode(ctx); err != nil {
			return err
		}
	}
	return tb.save()
}

// AddNode creates one more node (a node joining the cluster later).
func (tb *Testbed) AddNode(ctx context.Context) (*Node, error) {
	tb.mu.Lock()
	idx := 1
	for _, n := range tb.Nodes {
		idx = max(idx, n.Index+1)
	}
	if 10+idx > maxHostOctet {
		tb.mu.Unlock()
		return nil, fmt.Errorf("add node: no address left for node %d", idx)
	}
	n := tb.newNode(idx)
	// Registered before it is wired so that Close removes a half-made node.
	tb.Nodes = append(tb.Nodes, n)
	tb.mu.Unlock()

	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("add node %s: %w", n.Name, err)
	}
	if err := tb.wireNode(n); err != nil {
		return nil, fmt.Errorf("add node %s: %w", n.Name, err)
	}
	if err := tb.save(); err != nil {
		return nil, err
	}
	klog.V(2).Infof("testbed %s: node %s at %s (segment %d)", tb.Name, n.Name, n.Addr, n.Segment)
	return n, nil
}

// RemoveNode stops the node's processes and deletes its pods and namespace.
func (tb *Testbed) RemoveNode(ctx context.Context, n *Node) error {
	var errs []error
	for _, p := range tb.procsIn(n.NS) {
		errs = append(errs, p.Stop())
	}
	for _, p := range tb.podsOf(n) {
		errs = append(errs, tb.RemovePod(ctx, p))
	}
	// Deleting the hub's end removes the pair now; a deleted namespace
	// releases its interfaces only later, and a node joining next would
	// reuse the port name.
	errs = append(errs, deletePort(tb.Hub.NS, n.Name), DeleteNS(n.NS))
	// The log stays for a post-mortem; a stale subnet.env would fool
	// WaitSubnetFile on a node that rejoins under the same name.
	if err := os.Remove(n.SubnetFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove node %s: %w", n.Name, err)
	}
	tb.mu.Lock()
	for i, m := range tb.Nodes {
		if m == n {
			tb.Nodes = append(tb.Nodes[:i:i], tb.Nodes[i+1:]...)
			break
		}
	}
	tb.mu.Unlock()
	return tb.save()
}

// Node returns the node with the given 1-based index, or nil.
func (tb *Testbed) Node(index int) *Node {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, n := range tb.Nodes {
		if n.Index == index {
			return n
		}
	}
	return nil
}

func (tb *Testbed) newNode(idx int) *Node {
	name := fmt.Sprintf("n%d", idx)
	seg := 1
	if tb.Opts.Segments == 2 && idx%2 == 0 {
		seg = 2
	}
	dir := filepath.Join(tb.Opts.StateDir, "nodes", name)
	n := &Node{
		Host:       *tb.host(name, seg, 10+idx),
		Index:      idx,
		Segment:    seg,
		Iface:      "eth0",
		Dir:        dir,
		SubnetFile: filepath.Join(dir, "subnet.env"),
		LogFile:    filepath.Join(dir, "flanneld.log"),
	}
	return n
}

// AddOutside creates the "outside" host on segment 1 (198.51.100.200), a
// machine outside the cluster for masquerade tests. It is idempotent.
func (tb *Testbed) AddOutside(ctx context.Context) (*Host, error) {
	tb.mu.Lock()
	if tb.Outside != nil {
		h := tb.Outside
		tb.mu.Unlock()
		return h, nil
	}
	h := tb.host("out", 1, 200)
	tb.Outside = h
	tb.mu.Unlock()
	if err := tb.wireOutside(h); err != nil {
		return nil, fmt.Errorf("add outside host: %w", err)
	}
	return h, tb.save()
}

// Close stops every process the testbed started, deletes its namespaces
// (pods first) and its state directory; with Options.KeepState the logs,
// subnet files and etcd data stay (until the next New with that
// directory). It is idempotent.
func (tb *Testbed) Close(ctx context.Context) error {
	var errs []error
	errs = append(errs, tb.stopAll())
	for _, ns := range tb.namespaces() {
		errs = append(errs, DeleteNS(ns))
	}
	// New refused to start while any fl-<name>-* existed, so all of them
	// are ours, including ones made by a half-finished step.
	state := tb.Opts.StateDir
	if tb.Opts.KeepState {
		state = ""
	}
	errs = append(errs, Remove(tb.Name, state))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close testbed %s: %w", tb.Name, err)
	}
	return nil
}

// namespaces lists the testbed's namespaces, pods first, hub last.
func (tb *Testbed) namespaces() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []string
	for _, n := range tb.Nodes {
		for _, p := range n.Pods {
			out = append(out, p.NS)
		}
	}
	for _, n := range tb.Nodes {
		out = append(out, n.NS)
	}
	for _, h := range []*Host{tb.Outside, tb.Router, tb.Hub} {
		if h != nil {
			out = append(out, h.NS)
		}
	}
	return out
}

func (tb *Testbed) podsOf(n *Node) []*Pod {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]*Pod(nil), n.Pods...)
}

// save hands the topology to the recorder, if there is one.
func (tb *Testbed) save() error {
	if tb.Opts.Recorder == nil {
		return nil
	}
	// Under the lock for the whole write: concurrent saves must not
	// interleave, and the last one must describe the latest state.
	tb.mu.Lock()
	defer tb.mu.Unlock()
	data, err := json.MarshalIndent(tb, "", "  ")
	if err != nil {
		return fmt.Errorf("encode topology: %w", err)
	}
	if err := tb.Opts.Recorder.Topology(data); err != nil {
		return fmt.Errorf("record topology: %w", err)
	}
	return nil
}

// FromTopology is the testbed a Recorder was given as data, as another
// process sees it: its hosts, nodes, pods and files, none of its
// processes (Close deletes the namespaces and the state; stopping the
// processes is the recorder's job). It restores what the JSON leaves out:
// the pods' links to their nodes.
func FromTopology(data []byte) (*Testbed, error) {
	tb := &Testbed{PodNetworker: HandWired{}, procs: map[*Proc]struct{}{}}
	if err := json.Unmarshal(data, tb); err != nil {
		return nil, fmt.Errorf("decode testbed topology: %w", err)
	}
	if !testbedName.MatchString(tb.Name) || tb.Hub == nil {
		return nil, fmt.Errorf("decode testbed topology: no testbed name or hub in it")
	}
	for _, n := range tb.Nodes {
		for _, p := range n.Pods {
			p.Node = n
		}
	}
	return tb, nil
}
