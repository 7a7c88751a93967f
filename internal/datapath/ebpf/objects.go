package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// objects are the loaded programs and maps.
type objects struct{ fastpathObjects }

// loadObjects loads the programs into the kernel; the verifier's log is in
// the error when it refuses them.
func loadObjects() (*objects, error) {
	var o objects
	if err := loadFastpathObjects(&o.fastpathObjects, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load the eBPF fast path: the kernel's verifier refused it: %+v", ve)
		}
		return nil, fmt.Errorf("load the eBPF fast path (needs BPF with tc programs, the conntrack kfuncs of nf_conntrack and root or CAP_BPF+CAP_NET_ADMIN; set \"Datapath\" back to \"kernel\" to run without it): %w", err)
	}
	return &o, nil
}

// Settings are what the programs need to know about the node.
type Settings struct {
	Cluster netip.Prefix // the cluster's IPv4 pod network
	Local   netip.Prefix // this node's pod subnet
	Uplink  int          // ifindex packets to other nodes' pods leave by
	// BridgeMAC is the pod bridge's address: the source of packets the
	// kernel would have routed to a pod through the bridge.
	BridgeMAC net.HardwareAddr
	// AllKernel sends every pod to the kernel path (a policy controller
	// that has not told yet which pods it selects).
	AllKernel bool
}

const cfgAllKernel = 1

func (o *objects) configure(s Settings) error {
	c := fastpathConfig{
		ClusterNet: be32(s.Cluster.Masked().Addr()), ClusterMask: mask(s.Cluster),
		LocalNet: be32(s.Local.Masked().Addr()), LocalMask: mask(s.Local),
		UplinkIfindex: uint32(s.Uplink),
	}
	if s.AllKernel {
		c.Flags |= cfgAllKernel
	}
	copy(c.BridgeMac[:], s.BridgeMAC)
	if err := o.ConfigMap.Put(uint32(0), c); err != nil {
		return fmt.Errorf("write the fast path's settings: %w", err)
	}
	return nil
}

// podEntry is one pod as the programs see it.
type podEntry struct {
	IP         netip.Addr
	Ifindex    int
	MAC        net.HardwareAddr
	KernelOnly bool
}

func (p podEntry) value() fastpathPod {
	v := fastpathPod{Ifindex: uint32(p.Ifindex)}
	copy(v.Mac[:], p.MAC)
	if p.KernelOnly {
		v.KernelOnly = 1
	}
	return v
}

// setPods makes the pod map hold exactly want, changing only what differs.
func (o *objects) setPods(want []podEntry) error {
	keep := map[uint32]fastpathPod{}
	for _, p := range want {
		keep[be32(p.IP)] = p.value()
	}
	var k uint32
	var v fastpathPod
	var stale []uint32
	it := o.Pods.Iterate()
	for it.Next(&k, &v) {
		if w, ok := keep[k]; !ok {
			stale = append(stale, k)
		} else if w == v {
			delete(keep, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read the fast path's pod map: %w", err)
	}
	for _, k := range stale {
		if err := o.Pods.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove a pod from the fast path's map: %w", err)
		}
	}
	for k, v := range keep {
		if err := o.Pods.Put(k, v); err != nil {
			return fmt.Errorf("add a pod to the fast path's map: %w", err)
		}
	}
	return nil
}

// counters sums the per-CPU counters, indexed as enum stat.
func (o *objects) counters() ([]uint64, error) {
	out := make([]uint64, len(statNames))
	for i := range out {
		var perCPU []uint64
		if err := o.Stats.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read the fast path's counters: %w", err)
		}
		for _, n := range perCPU {
			out[i] += n
		}
	}
	return out, nil
}

// be32 is an IPv4 address as the programs compare it: the bytes in
// network order, read as a host-order word.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func mask(p netip.Prefix) uint32 {
	m := net.CIDRMask(p.Bits(), 32)
	return binary.NativeEndian.Uint32(m)
}
