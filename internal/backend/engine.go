package backend

import (
	"errors"
	"fmt"
	"sync"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
)

// EntryWriter is the kernel side of one Table: it writes, deletes and lists
// one kind of entry (a route, a neighbour, an FDB entry, a WireGuard peer),
// keyed as the kernel keys it. Passed in, so that the engine's logic is
// tested without root.
type EntryWriter[K, V comparable] interface {
	// Set makes k's entry v, replacing whatever other value k had.
	Set(k K, v V) error
	// Delete takes the entry k=v out; one already gone is no error.
	Delete(k K, v V) error
	// Visit calls f for each entry of this kind in the kernel as the dump
	// arrives; ours says whether it has the shape flannel writes, so that
	// one no peer wants may be deleted. An interrupted dump is read again,
	// after reset.
	Visit(reset func(), f func(k K, v V, ours bool)) error
	// Same says whether the kernel's have is the wanted want.
	Same(want, have V) bool
	// Describe names k=v for the operator, in ip(8) syntax where there is
	// one.
	Describe(k K, v V) string
}

// ErrUnroutable, wrapped in an EntryWriter's Set error, says the entry
// must not be in the kernel now (host-gw: the peer's next hop is off this
// node's segment) and that the writer has taken out any earlier form of
// it and told the operator. The entry stays wanted and is tried again at
// every reconcile, but it is no failed write to retry at once.
var ErrUnroutable = errors.New("peer not routable from this node")

// PeerTable is a Table seen from its PeerSet, whatever its key and value.
type PeerTable[P any] interface {
	named(name string)
	set(p, old P, had bool, newest newestFunc[P])
	release(old P, newest newestFunc[P])
	rebuild(peers map[string]keyed[P])
	repair(r Repairs, prune bool) error
	failedWrite() bool
}

// newestFunc returns the newest current peer for which match holds.
type newestFunc[P any] func(match func(P) bool) (P, bool)

// keyed is a peer with its order of arrival: the newest lease wins a
// kernel key that several want.
type keyed[P any] struct {
	p   P
	seq uint64
}

// PeerSet is the per-peer engine every backend that programs peers into
// the kernel shares: what each current lease asks for (a P), by lease key,
// and the kernel entries that follow from it, one Table per kind of
// entry. Two leases may want one kernel key (a twin lease written under
// another key, a node re-registered): the newest one's form is written,
// and removing either leaves the other's in place. A failed write stays
// wanted; Failed says so, for the backend to kick its healer. Repair
// restores what drifted and prunes what no lease wants. All methods must
// be called under the backend's lock; the Tables' InLine need none.
type PeerSet[P interface {
	comparable
	fmt.Stringer
}] struct {
	name   string
	peers  map[string]keyed[P]
	seq    uint64
	tables []PeerTable[P]
	// Log is where a peer's change goes: level 0, or -v=2 inside a big
	// batch, which Peers summarises in one line instead.
	Log klog.Verbose
}

// NewPeerSet returns an engine with no peers over tables, written in the
// order given (vxlan: neighbour and FDB entry before the route, so that
// the route never points at an unresolved next hop). name begins its logs.
func NewPeerSet[P interface {
	comparable
	fmt.Stringer
}](name string, tables ...PeerTable[P]) *PeerSet[P] {
	for _, t := range tables {
		t.named(name)
	}
	return &PeerSet[P]{name: name, peers: map[string]keyed[P]{}, tables: tables, Log: klog.V(0)}
}

// Len is the number of current peers.
func (s *PeerSet[P]) Len() int { return len(s.peers) }

// Get returns what lease key asks for.
func (s *PeerSet[P]) Get(key string) (P, bool) {
	k, ok := s.peers[key]
	return k.p, ok
}

// Each calls f for every current peer.
func (s *PeerSet[P]) Each(f func(key string, p P)) {
	for key, k := range s.peers {
		f(key, k.p)
	}
}

// Set makes p what lease key asks for and writes its entries. A changed
// peer is written anew first and only then are the leftovers of its old
// form released, so its traffic is not dropped while it is re-pointed.
func (s *PeerSet[P]) Set(key string, p P) {
	old, had := s.peers[key]
	if had && old.p == p {
		return
	}
	s.seq++
	s.peers[key] = keyed[P]{p: p, seq: s.seq}
	for _, t := range s.tables {
		t.set(p, old.p, had, s.newest)
	}
	if had {
		s.Log.Infof("%s: re-programmed %s (was %s)", s.name, p, old.p)
		return
	}
	s.Log.Infof("%s: added %s", s.name, p)
}

// Remove forgets lease key and deletes its entries, except those another
// current lease wants: those get that lease's form back.
func (s *PeerSet[P]) Remove(key string) {
	old, had := s.peers[key]
	if !had {
		return
	}
	delete(s.peers, key)
	for _, t := range s.tables {
		t.release(old.p, s.newest)
	}
	s.Log.Infof("%s: removed %s", s.name, old.p)
}

// Handle applies one lease event: a removal forgets the lease; an addition
// or change sets what peerFor makes of it, or, when the lease is of no use
// (peerFor says why, for the operator), forgets it too. It returns the
// peer set, if any.
func (s *PeerSet[P]) Handle(ev lease.Event, peerFor func(*lease.Lease) (P, error)) (P, bool) {
	var none P
	key := ev.Lease.Key()
	if ev.Type == lease.Removed {
		s.Remove(key)
		return none, false
	}
	p, err := peerFor(&ev.Lease)
	if err != nil {
		klog.Errorf("%s: cannot program peer %s: %v", s.name, ev.Lease.String(), err)
		s.Remove(key)
		return none, false
	}
	s.Set(key, p)
	return p, true
}

// Rebuild recomputes the wanted entries from the peers, after something
// they are derived from changed (a device re-created with a new index).
func (s *PeerSet[P]) Rebuild() {
	for _, t := range s.tables {
		t.rebuild(s.peers)
	}
}

func (s *PeerSet[P]) newest(match func(P) bool) (P, bool) {
	var best keyed[P]
	for _, k := range s.peers {
		if k.seq > best.seq && match(k.p) {
			best = k
		}
	}
	return best.p, best.seq > 0
}

// Failed says whether a write failed since the last Repair.
func (s *PeerSet[P]) Failed() bool {
	for _, t := range s.tables {
		if t.failedWrite() {
			return true
		}
	}
	return false
}

// Repair reads each Table's entries once, restores every wanted one that
// is missing or different and counts it in r by kind; with prune (once
// the first full batch of leases is applied) it deletes the entries of
// flannel's shape that no lease wants, left by an earlier run for leases
// that expired meanwhile or added by hand. The cost is one dump and one
// map lookup per kernel entry.
func (s *PeerSet[P]) Repair(r Repairs, prune bool) error {
	var errs []error
	for _, t := range s.tables {
		if err := t.repair(r, prune); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

// Table is the desired state of one kind of kernel entry, by the kernel's
// key, derived from each peer by Of, and written through Writer. Its
// InLine may be called at any time, without the backend's lock.
type Table[P any, K, V comparable] struct {
	name   string // the backend's, for logs
	kind   string // "route", "neighbour", "fdb", "peer": the Repairs kind
	of     func(P) (K, V, bool)
	w      EntryWriter[K, V]
	failed bool

	mu   sync.RWMutex // guards want, which InLine reads
	want map[K]wanted[V]
}

// wanted is a kernel key's wanted value and how many current peers want
// the key, so that the last one's removal needs no scan of the peers.
type wanted[V any] struct {
	v V
	n int32
}

// NewTable returns a Table of kind whose entries of derives from a peer
// (false: this peer wants none of this kind) and w writes.
func NewTable[P any, K, V comparable](kind string, of func(P) (K, V, bool), w EntryWriter[K, V]) *Table[P, K, V] {
	return &Table[P, K, V]{kind: kind, of: of, w: w, want: map[K]wanted[V]{}}
}

// InLine says whether a notification that entry k=v was added (or, with
// deleted, removed) leaves the kernel as the peers want it: typically the
// echo of the engine's own write, which must not wake the healer.
func (t *Table[P, K, V]) InLine(k K, v V, deleted bool) bool {
	t.mu.RLock()
	w, ok := t.want[k]
	t.mu.RUnlock()
	if deleted {
		return !ok || !t.w.Same(w.v, v)
	}
	return ok && t.w.Same(w.v, v)
}

// Wants says whether a current peer wants key k.
func (t *Table[P, K, V]) Wants(k K) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.want[k]
	return ok
}

func (t *Table[P, K, V]) setWant(k K, v V, dn int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.want[k]
	w.v, w.n = v, w.n+dn
	if w.n <= 0 {
		delete(t.want, k)
		return
	}
	t.want[k] = w
}

func (t *Table[P, K, V]) set(p, old P, had bool, newest newestFunc[P]) {
	k, v, ok := t.of(p)
	var k0 K
	var v0 V
	ok0 := false
	if had {
		k0, v0, ok0 = t.of(old)
	}
	same := ok && ok0 && k0 == k // the same lease, the same key
	switch {
	case same && v0 == v && t.newestOf(k, v):
		// The lease changed elsewhere (a VXLAN peer's public address
		// moves its FDB entry, not its neighbour): nothing to write.
	case ok:
		dn := int32(1)
		if same {
			dn = 0
		}
		// The writer's Set replaces the old form of the key in place.
		t.setWant(k, v, dn)
		t.write(k, v)
	}
	if ok0 && !same {
		t.release(old, newest)
	}
}

// newestOf says whether v is k's wanted form already.
func (t *Table[P, K, V]) newestOf(k K, v V) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	w, ok := t.want[k]
	return ok && w.v == v
}

// release takes old's entry out of the kernel: its key goes to the
// newest current peer wanting it, or out of the desired state.
func (t *Table[P, K, V]) release(old P, newest newestFunc[P]) {
	k, v, ok := t.of(old)
	if !ok {
		return
	}
	t.mu.RLock()
	cur := t.want[k] // cur.v is the form in the kernel: the newest's
	t.mu.RUnlock()
	if cur.n <= 1 {
		t.setWant(k, v, -1)
		t.delete(k, v)
		return
	}
	q, _ := newest(func(p P) bool { kq, _, okq := t.of(p); return okq && kq == k })
	_, vq, _ := t.of(q)
	t.setWant(k, vq, -1)
	if vq != cur.v {
		t.write(k, vq)
	}
}

func (t *Table[P, K, V]) rebuild(peers map[string]keyed[P]) {
	seqs := make(map[K]uint64, len(peers))
	want := make(map[K]wanted[V], len(peers))
	for _, kp := range peers {
		k, v, ok := t.of(kp.p)
		if !ok {
			continue
		}
		w := want[k]
		w.n++
		if kp.seq > seqs[k] {
			seqs[k], w.v = kp.seq, v
		}
		want[k] = w
	}
	t.mu.Lock()
	t.want = want
	t.mu.Unlock()
}

func (t *Table[P, K, V]) failedWrite() bool { return t.failed }

func (t *Table[P, K, V]) named(name string) { t.name = name }

// write puts k=v in the kernel and says whether it is in place.
func (t *Table[P, K, V]) write(k K, v V) bool {
	err := t.w.Set(k, v)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrUnroutable):
	default:
		klog.Errorf("%s: set %s %s: %v (retrying with back-off)", t.name, t.kind, t.w.Describe(k, v), err)
		t.failed = true
	}
	return false
}

func (t *Table[P, K, V]) delete(k K, v V) {
	if err := t.w.Delete(k, v); err != nil {
		klog.Errorf("%s: delete %s %s: %v", t.name, t.kind, t.w.Describe(k, v), err)
	}
}

// entry is one kernel entry, for a list of stale ones.
type entry[K, V any] struct {
	k K
	v V
}

func (t *Table[P, K, V]) repair(r Repairs, prune bool) error {
	t.failed = false
	in := make(map[K]bool, len(t.want))
	var stale []entry[K, V]
	err := t.w.Visit(func() { clear(in); stale = stale[:0] }, func(k K, v V, ours bool) {
		w, wanted := t.want[k]
		switch {
		case wanted && t.w.Same(w.v, v):
			in[k] = true
		case wanted, !prune, !ours: // restored below, or not flannel's
		default:
			stale = append(stale, entry[K, V]{k, v})
		}
	})
	if err != nil {
		return fmt.Errorf("list %s entries: %w", t.kind, err)
	}
	for _, e := range stale {
		klog.Infof("%s: removing stale %s %s", t.name, t.kind, t.w.Describe(e.k, e.v))
		t.delete(e.k, e.v)
	}
	for k, w := range t.want {
		if !in[k] && t.write(k, w.v) {
			klog.Infof("%s: restored %s %s", t.name, t.kind, t.w.Describe(k, w.v))
			r.Add(t.kind)
		}
	}
	if t.failed {
		return fmt.Errorf("some %s entries could not be written", t.kind)
	}
	return nil
}
