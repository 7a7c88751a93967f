package udp

import (
	"fmt"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/conn"
)

// peer is one remote node: its subnet and where its flanneld listens.
// Comparable, so a change is detected with ==.
type peer struct {
	subnet netip.Prefix
	addr   netip.Addr
	port   uint16
}

func (p peer) String() string {
	return fmt.Sprintf("peer %s at %s", p.subnet, netip.AddrPortFrom(p.addr, p.port))
}

// peerTable maps a destination address to the node owning it. It is built
// whole on every change and never modified, so the packet loops read it
// without locks.
type peerTable struct {
	bits []int // distinct subnet lengths, longest first
	eps  map[netip.Prefix]conn.Endpoint
}

func newPeerTable(peers []peer) *peerTable {
	t := &peerTable{eps: make(map[netip.Prefix]conn.Endpoint, len(peers))}
	for _, p := range peers {
		t.eps[p.subnet] = &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(p.addr, p.port)}
		if !slices.Contains(t.bits, p.subnet.Bits()) {
			t.bits = append(t.bits, p.subnet.Bits())
		}
	}
	slices.Sort(t.bits)
	slices.Reverse(t.bits)
	return t
}

// lookup returns the endpoint for an IPv4 packet's destination, or nil
// when the packet is not IPv4 or no peer owns the destination.
func (t *peerTable) lookup(pkt []byte) conn.Endpoint {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil
	}
	dst := netip.AddrFrom4([4]byte(pkt[16:20]))
	for _, bits := range t.bits {
		p, _ := dst.Prefix(bits)
		if ep, ok := t.eps[p]; ok {
			return ep
		}
	}
	return nil
}
