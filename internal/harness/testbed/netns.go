package testbed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
)

// netnsDir is where iproute2 and vishvananda/netns keep named namespaces.
const netnsDir = "/run/netns"

// NSPath is the bind-mount path of a named namespace, as CNI plugins want it.
func NSPath(ns string) string { return filepath.Join(netnsDir, ns) }

// InNamespace runs fn on an OS thread switched into the named namespace.
// fn runs on a goroutine of its own so that, should switching back fail, the
// thread dies with the goroutine instead of returning to the Go scheduler in
// the wrong namespace.
func InNamespace(ns string, fn func() error) error {
	target, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer target.Close()
	return inHandle(target, ns, fn)
}

func inHandle(target netns.NsHandle, label string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", label, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Thread stays locked: it is destroyed when this goroutine ends.
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", label, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// CreateNS makes a new named network namespace with lo up. It goes
// through `ip netns add` so that /run/netns is set up the way iproute2
// expects (a shared mount point), whoever creates the first namespace.
func CreateNS(ns string) error {
	if _, err := os.Stat(NSPath(ns)); err == nil {
		return fmt.Errorf("create namespace %s: it exists already", ns)
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("create namespace %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return WithHandle(ns, func(h *netlink.Handle) error { return linkUp(h, "lo") })
}

// DeleteNS removes a named namespace; a missing one is not an error.
func DeleteNS(ns string) error {
	p := NSPath(ns)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	err := netns.DeleteNamed(ns)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// A half-created namespace may be a plain file that was never mounted.
	if errors.Is(err, unix.EINVAL) {
		if rerr := os.Remove(p); rerr == nil || errors.Is(rerr, os.ErrNotExist) {
			return nil
		}
	}
	return fmt.Errorf("delete namespace %s: %w", ns, err)
}

// ListNS returns the named namespaces that start with prefix.
func ListNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// WithHandle runs fn with a netlink handle bound to the named namespace.
func WithHandle(ns string, fn func(h *netlink.Handle) error) error {
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", ns, err)
	}
	defer h.Close()
	if err := fn(h); err != nil {
		return fmt.Errorf("in namespace %s: %w", ns, err)
	}
	return nil
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// VethPair creates nameA in nsA with its peer nameB directly in nsB, so
// neither end ever exists in the caller's namespace. Both ends get mtu.
func VethPair(nsA, nameA, nsB, nameB string, mtu int) error {
	peer, err := netns.GetFromName(nsB)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", nsB, err)
	}
	defer peer.Close()
	return WithHandle(nsA, func(h *netlink.Handle) error {
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: nameA, MTU: mtu},
			PeerName:      nameB,
			PeerMTU:       uint32(mtu),
			PeerNamespace: netlink.NsFd(int(peer)),
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s (peer %s in %s): %w", nameA, nameB, nsB, err)
		}
		return nil
	})
}

// deletePort deletes link name in ns if it exists.
func deletePort(ns, name string) error {
	if _, err := os.Stat(NSPath(ns)); err != nil {
		return nil
	}
	return WithHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return err
		}
		return h.LinkDel(l)
	})
}

// addAddr puts addr on link; IPv6 addresses skip duplicate address
// detection so they are usable at once.
func addAddr(h *netlink.Handle, link string, addr netip.Prefix) error {
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find link %s: %w", link, err)
	}
	a := &netlink.Addr{IPNet: ipnet.FromPrefix(addr)}
	if addr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address %s to %s: %w", addr, link, err)
	}
	return nil
}

func addRoute(h *netlink.Handle, dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{Dst: ipnet.FromPrefix(dst.Masked()), Gw: gw.AsSlice()}
	if dst.Bits() == 0 {
		r.Dst = nil
		if dst.Addr().Is6() {
			r.Family = unix.AF_INET6
		} else {
			r.Family = unix.AF_INET
		}
	}
	if err := h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add route %s via %s: %w", dst, gw, err)
	}
	return nil
}

// SetSysctls writes net sysctls (keys like "net.ipv4.ip_forward") inside ns.
// /proc/sys/net follows the namespace of the thread that opens it.
func SetSysctls(ns string, kv map[string]string) error {
	return InNamespace(ns, func() error {
		for k, v := range kv {
			p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", k, v, ns, err)
			}
		}
		return nil
	})
}

// Exec runs argv inside ns through `ip netns exec` and returns the combined
// output; the error includes that output.
func Exec(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec in %s: no command", ns)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s (in %s): %w: %s", strings.Join(argv, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Ping sends one echo request of size payload bytes from ns to to, with a
// one-second timeout. dontFragment forbids fragmentation (path MTU probes).
// It is the one ping of the project's tests and of `flannelctl lab check`.
func Ping(ctx context.Context, fromNS string, to netip.Addr, size int, dontFragment bool) error {
	_, err := PingOutput(ctx, fromNS, to, size, dontFragment)
	return err
}

// PingOutput is Ping that also returns what ping printed (the "frag needed
// and DF set" line of a path MTU probe, for instance).
func PingOutput(ctx context.Context, fromNS string, to netip.Addr, size int, dontFragment bool) ([]byte, error) {
	return PingWith(ctx, fromNS, to, PingOptions{Size: size, DontFragment: dontFragment})
}

// PingOptions shape a ping beyond Ping's one echo of size bytes.
type PingOptions struct {
	Size         int // payload bytes; 0 means ping's default, 56
	DontFragment bool
	Count        int           // echoes; 0 means 1
	Interval     time.Duration // between echoes; 0 means ping's default, 1 s
	Wait         time.Duration // for each reply; 0 means 1 s
	Pattern      string        // hex bytes that fill the payload (found in underlay captures)
}

// PingWith runs ping from ns to to as o says and returns what it printed;
// it fails unless at least one echo is answered.
func PingWith(ctx context.Context, fromNS string, to netip.Addr, o PingOptions) ([]byte, error) {
	size, count, wait := cmp.Or(o.Size, 56), cmp.Or(o.Count, 1), cmp.Or(o.Wait, time.Second)
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
	argv := []string{"ping", "-n", "-c", strconv.Itoa(count), "-W", secs(wait), "-s", strconv.Itoa(size)}
	if o.Interval > 0 {
		argv = append(argv, "-i", secs(o.Interval))
	}
	if o.DontFragment {
		argv = append(argv, "-M", "do")
	}
	if o.Pattern != "" {
		argv = append(argv, "-p", o.Pattern)
	}
	return Exec(ctx, fromNS, append(argv, to.String())...)
}

// PingWithin repeats Ping until one echo is answered or within has passed
// (at least one attempt is made): the first packet to a new peer may wait
// for neighbour resolution, or race the programming of the path.
func PingWithin(ctx context.Context, fromNS string, to netip.Addr, size int, dontFragment bool, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := Ping(ctx, fromNS, to, size, dontFragment)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pollEvery):
		}
	}
}

// The exported builders below serve tests that lay out their own
// namespaces (internal/harness/testbed/tbtest): same primitives as the testbed's
// own underlay, one implementation.

// AddAddress puts addr on link inside ns (IPv6 without duplicate address
// detection, so it is usable at once).
func AddAddress(ns, link string, addr netip.Prefix) error {
	return WithHandle(ns, func(h *netlink.Handle) error { return addAddr(h, link, addr) })
}

// LinkUp sets link up inside ns.
func LinkUp(ns, link string) error {
	return WithHandle(ns, func(h *netlink.Handle) error { return linkUp(h, link) })
}

// AddBridge creates bridge name inside ns with the given MTU and MAC and
// multicast snooping off, and sets it up. A fixed MAC matters for a bridge
// that carries a gateway address: one without takes its lowest port's MAC
// and changes it when that port moves, leaving neighbours' ARP entries
// pointing nowhere. Snooping without a querier can drop IPv6 neighbour
// solicitations.
func AddBridge(ns, name string, mtu int, mac net.HardwareAddr) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		off := false
		br := &netlink.Bridge{
			LinkAttrs:         netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: mac},
			MulticastSnooping: &off,
		}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		return linkUp(h, name)
	})
}

// Attach enslaves port to bridge inside ns and sets the port up.
func Attach(ns, port, bridge string) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		br, err := h.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("find bridge %s: %w", bridge, err)
		}
		p, err := h.LinkByName(port)
		if err != nil {
			return fmt.Errorf("find port %s: %w", port, err)
		}
		if err := h.LinkSetMaster(p, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", port, bridge, err)
		}
		return h.LinkSetUp(p)
	})
}

// ReplaceRoute sets the route to dst via gw out of dev inside ns, replacing
// one that is there.
func ReplaceRoute(ns string, dst netip.Prefix, gw netip.Addr, dev string) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("find link %s: %w", dev, err)
		}
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipnet.FromPrefix(dst.Masked()), Gw: gw.AsSlice()}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s dev %s: %w", dst, gw, dev, err)
		}
		return nil
	})
}
