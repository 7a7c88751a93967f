package vxlan

import (
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/backend"
)

// wanted is a stack's desired state, kept up to date as peers come and go
// rather than rebuilt from every peer on each use, and readable under its
// own lock: the healer's notification filter (inLine) checks every route,
// neighbour and FDB notification against it without waiting for the
// network's lock. Writers hold the network's lock too.
type wanted struct {
	mu sync.RWMutex
	d  desiredState
}

func newWanted() *wanted {
	return &wanted{d: desiredState{routes: map[netip.Prefix]route{}, neigh: map[netip.Addr]vtepMAC{}, fdb: map[vtepMAC]netip.Addr{}}}
}

// add records p, the newest peer, as what its kernel keys want.
func (w *wanted) add(p peer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.d.routes[p.subnet] = p.route()
	if !p.direct {
		w.d.neigh[p.subnet.Addr()] = p.mac
		w.d.fdb[p.mac] = p.publicIP
	}
}

// recompute sets the kernel keys p used to what the newest current peer
// wanting each of them asks for, or forgets them: after p was dropped or
// replaced. A scan of the peers, done only for a removal.
func (s *stack) recompute(p peer) {
	var routeKey, neigh, fdb string // the newest peer's key wanting each
	newer := func(cur, key string) bool { return cur == "" || s.peers[key].seq > s.peers[cur].seq }
	for key, q := range s.peers {
		if q.subnet == p.subnet && newer(routeKey, key) {
			routeKey = key
		}
		if !q.direct && q.subnet.Addr() == p.subnet.Addr() && newer(neigh, key) {
			neigh = key
		}
		if !q.direct && q.mac == p.mac && newer(fdb, key) {
			fdb = key
		}
	}
	w := s.want
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.d.routes, p.subnet)
	if routeKey != "" {
		w.d.routes[p.subnet] = s.peers[routeKey].route()
	}
	if p.direct {
		return
	}
	delete(w.d.neigh, p.subnet.Addr())
	if neigh != "" {
		w.d.neigh[p.subnet.Addr()] = s.peers[neigh].mac
	}
	delete(w.d.fdb, p.mac)
	if fdb != "" {
		w.d.fdb[p.mac] = s.peers[fdb].publicIP
	}
}

// routeInLine says whether a route notification leaves the kernel as the
// stack wants it: a route added (or replaced) in the form a peer wants, or
// a route deleted whose destination no peer wants. Anything else (a route
// of ours deleted or altered, a stranger on our device) is drift.
func (s *stack) routeInLine(u netlink.RouteUpdate, dev int) bool {
	dst, ok := backend.PrefixOf(u.Dst)
	if !ok || u.Table != unix.RT_TABLE_MAIN {
		return false
	}
	s.want.mu.RLock()
	r, want := s.want.d.routes[dst]
	s.want.mu.RUnlock()
	if u.Type == unix.RTM_DELROUTE {
		return !want
	}
	if !want || u.Gw == nil {
		return false
	}
	gw, _ := netip.AddrFromSlice(u.Gw)
	if r.direct {
		return u.LinkIndex == s.b.ext.Iface.Index && gw.Unmap() == r.gw
	}
	return u.LinkIndex == dev && gw.Unmap() == r.gw
}

// neighInLine does the same for the device's neighbour (ARP/NDP) and FDB
// entries: added as wanted, permanent; deleted and not wanted; or a
// passing non-permanent entry for an address no peer wants (the kernel
// reports a deleted neighbour as FAILED first), which the reconcile
// leaves alone as well.
func (s *stack) neighInLine(u netlink.NeighUpdate) bool {
	ip, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	mac, isMAC := macOf(u.HardwareAddr)
	permanent := u.State&netlink.NUD_PERMANENT != 0
	s.want.mu.RLock()
	defer s.want.mu.RUnlock()
	if u.Family == unix.AF_BRIDGE {
		dst, want := s.want.d.fdb[mac]
		want = want && isMAC
		switch {
		case u.Type == unix.RTM_DELNEIGH:
			return !want || dst != ip
		case !want:
			return !permanent
		}
		return dst == ip && permanent
	}
	have, want := s.want.d.neigh[ip]
	switch {
	case u.Type == unix.RTM_DELNEIGH:
		return !want
	case !want:
		return !permanent
	}
	return isMAC && have == mac && permanent
}
