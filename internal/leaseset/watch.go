package leaseset

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/pace"
)

// WatchedHost is the Host of a running daemon: it reads the node's
// addresses and routes (as NetlinkHost does) once, and again only after a
// netlink notification says that something other than flannel's own
// devices changed. With thousands of peers the route table holds thousands
// of flannel routes; reading and parsing all of them for every batch of
// lease events made each new lease wait for a full dump.
type WatchedHost struct {
	read NetlinkHost

	mu      sync.Mutex
	dirty   bool
	cache   []HostPrefix
	flannel map[int]bool // flannel's devices at the last read, by index
	reads   int          // full reads so far, for tests
	notes   int          // notifications handled so far, for tests
}

// WatchHost starts following notifications in namespace ns (nil: the
// current one) until ctx ends.
func WatchHost(ctx context.Context, ns *netns.NsHandle) (*WatchedHost, error) {
	if ns == nil {
		cur, err := netns.Get()
		if err != nil {
			return nil, fmt.Errorf("open the current network namespace: %w", err)
		}
		defer cur.Close()
		ns = &cur
	}
	// Kept open while following: the subscriptions are opened in it again
	// after a break.
	own, err := netns.GetFromPath(fmt.Sprintf("/proc/self/fd/%d", int(*ns)))
	if err != nil {
		return nil, fmt.Errorf("hold the network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(own)
	if err != nil {
		own.Close()
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	w := &WatchedHost{read: NetlinkHost{Handle: h}, dirty: true}
	go func() {
		w.follow(ctx, own)
		h.Close()
		own.Close()
	}()
	return w, nil
}

// Prefixes returns the node's addresses and routes, read anew only when
// they may have changed since the last read.
func (w *WatchedHost) Prefixes() ([]HostPrefix, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirty {
		// Cleared before reading: a change during the read sets it again.
		w.dirty = false
		out, flannel, err := w.read.read()
		if err != nil {
			w.dirty = true
			return nil, err
		}
		w.cache, w.flannel = out, flannel
		w.reads++
	}
	return slices.Clone(w.cache), nil
}

func (w *WatchedHost) touch(index int, alwaysRelevant bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.notes++
	if alwaysRelevant || !w.flannel[index] {
		w.dirty = true
	}
}

// follow subscribes to link, address and route notifications and marks
// the cache stale for each that is not about a flannel device. A broken
// subscription (the socket overflowed) is renewed and the cache marked
// stale, since notifications were lost.
func (w *WatchedHost) follow(ctx context.Context, ns netns.NsHandle) {
	b := pace.New(pace.Policy{Min: time.Second, Max: 30 * time.Second, Jitter: 0.2, Stable: time.Minute})
	for ctx.Err() == nil {
		started := time.Now()
		done := make(chan struct{})
		if err := w.subscribe(ctx, ns, done); err != nil {
			klog.Errorf("lease guard: follow netlink notifications: %v; re-reading the host's routes for every lease batch until it works", err)
		}
		w.touch(0, true)
		b.Settled(time.Since(started))
		_ = b.Sleep(ctx)
		close(done)
	}
}

// subscribe returns when one of the subscriptions ends or ctx does.
func (w *WatchedHost) subscribe(ctx context.Context, ns netns.NsHandle, done chan struct{}) error {
	onErr := func(err error) { klog.V(1).Infof("lease guard: netlink notification: %v", err) }
	links, addrs, routes := make(chan netlink.LinkUpdate, 64), make(chan netlink.AddrUpdate, 64), make(chan netlink.RouteUpdate, 1024)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		return err
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		return err
	}
	// A large buffer: thousands of peers' routes are announced in a burst
	// at start-up, and an overflow costs a full re-read.
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr,
		ReceiveBufferSize: 4 << 20, ReceiveBufferForceSize: true}); err != nil {
		return err
	}
	// Anything may have changed before the subscriptions were in place.
	w.touch(0, true)
	for {
		select {
		case u, ok := <-links:
			if !ok {
				return nil
			}
			w.touch(int(u.Index), true) // a new, renamed or re-created device
		case u, ok := <-addrs:
			if !ok {
				return nil
			}
			w.touch(u.LinkIndex, false)
		case u, ok := <-routes:
			if !ok {
				return nil
			}
			if u.Table == unix.RT_TABLE_MAIN {
				w.touch(u.LinkIndex, u.LinkIndex == 0)
			}
		case <-ctx.Done():
			return nil
		}
	}
}
