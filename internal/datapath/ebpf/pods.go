package ebpf

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/nldump"
)

// Selected is the set of this node's pods that a NetworkPolicy or
// ClusterNetworkPolicy selects: their packets take the kernel path, where
// the policy table sees them. Until the policy controller has said which
// pods it selects, every pod takes the kernel path.
type Selected struct {
	mu    sync.Mutex
	known bool
	addrs map[netip.Addr]bool
	wake  chan struct{}
}

// NewSelected returns a set that knows nothing yet.
func NewSelected() *Selected { return &Selected{wake: make(chan struct{}, 1)} }

// Set replaces the set; the fast path follows within one reconcile.
func (s *Selected) Set(addrs []netip.Addr) {
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = true
	}
	s.mu.Lock()
	s.known, s.addrs = true, m
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// snapshot returns whether the set is known and, if so, a test for it.
// A nil Selected (policy off) is known and empty.
func (s *Selected) snapshot() (bool, func(netip.Addr) bool) {
	if s == nil {
		return true, func(netip.Addr) bool { return false }
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	known, addrs := s.known, s.addrs
	return known, func(a netip.Addr) bool { return addrs[a] }
}

func (s *Selected) changed() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.wake
}

// bridgePorts returns the bridge (nil when it does not exist yet: no pod
// was made) and its ports by name.
func bridgePorts(bridge string) (netlink.Link, map[string]int, error) {
	links, err := nldump.List(netlink.LinkList)
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	var br netlink.Link
	for _, l := range links {
		if l.Attrs().Name == bridge {
			br = l
		}
	}
	if br == nil {
		return nil, nil, nil
	}
	ports := map[string]int{}
	for _, l := range links {
		if a := l.Attrs(); a.MasterIndex == br.Attrs().Index && l.Type() == "veth" {
			ports[a.Name] = a.Index
		}
	}
	return br, ports, nil
}

// podEntries turns the CNI plugin's pod records into the programs' pod
// map: the IPv4 addresses in the node's subnet of pods whose host-side
// veth is a port of the bridge now (a record can outlive its pod).
func podEntries(pods []antispoof.Pod, bridge string, ports map[string]int, local netip.Prefix, selected func(netip.Addr) bool) []podEntry {
	var out []podEntry
	for _, p := range pods {
		idx, ok := ports[p.HostIf]
		if !ok || p.Bridge != bridge {
			continue
		}
		mac, err := net.ParseMAC(p.MAC)
		if err != nil {
			continue
		}
		for _, ip := range p.IPs {
			if ip = ip.Unmap(); ip.Is4() && local.Contains(ip) {
				out = append(out, podEntry{IP: ip, Ifindex: idx, MAC: mac, KernelOnly: selected(ip)})
			}
		}
	}
	return out
}
