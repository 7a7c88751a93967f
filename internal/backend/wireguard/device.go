package wireguard

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"
)

// device is one WireGuard interface, in the kernel or in this process.
// Both are driven with wgctrl's types, so the rest of the backend does not
// care which it has.
type device interface {
	Name() string
	Configure(cfg wgtypes.Config) error
	Peers() ([]wgtypes.Peer, error)
	// Greet sends the peer a keepalive, which starts a handshake when
	// there is no session. A peer that kept a session from this node's
	// previous run would otherwise send into it, unheard, until WireGuard
	// gives up on it after 15 s.
	Greet(peer wgtypes.Key, keepalive time.Duration) error
	// Kind is "kernel" or "userspace", for logs.
	Kind() string
	// Recreate makes the interface again after it was deleted; it comes
	// without key, port or peers.
	Recreate(mtu int) error
	Close() error
}

// kernelDevice is a "wireguard" link configured over generic netlink.
type kernelDevice struct {
	name string
	nl   *netlink.Handle
	wg   *wgctrl.Client
}

// errNoKernelModule says the kernel cannot create WireGuard links.
var errNoKernelModule = errors.New("kernel lacks wireguard")

// newKernelDevice (re)creates the link: a link left by an earlier run may
// hold peers whose leases are gone, so it starts afresh like upstream.
func newKernelDevice(h *netlink.Handle, name string, mtu int) (*kernelDevice, error) {
	if old, err := h.LinkByName(name); err == nil {
		klog.Warningf("wireguard: %s exists already; re-creating it", name)
		if err := h.LinkDel(old); err != nil {
			return nil, fmt.Errorf("ip link del %s: %w", name, err)
		}
	}
	if err := addKernelLink(h, name, mtu); err != nil {
		return nil, err
	}
	c, err := wgctrl.New()
	if err != nil {
		_ = h.LinkDel(&netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: name}, LinkType: "wireguard"})
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	return &kernelDevice{name: name, nl: h, wg: c}, nil
}

func addKernelLink(h *netlink.Handle, name string, mtu int) error {
	link := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, LinkType: "wireguard"}
	if err := h.LinkAdd(link); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) { // "Unknown device type"
			return fmt.Errorf("ip link add %s type wireguard: %w: %w", name, errNoKernelModule, err)
		}
		return fmt.Errorf("ip link add %s type wireguard: %w", name, err)
	}
	return nil
}

// Recreate adds the link again; wgctrl finds it by name.
func (d *kernelDevice) Recreate(mtu int) error { return addKernelLink(d.nl, d.name, mtu) }

func (d *kernelDevice) Name() string { return d.name }
func (d *kernelDevice) Kind() string { return "kernel" }

func (d *kernelDevice) Configure(cfg wgtypes.Config) error {
	return d.wg.ConfigureDevice(d.name, cfg)
}

func (d *kernelDevice) Peers() ([]wgtypes.Peer, error) {
	dev, err := d.wg.Device(d.name)
	if err != nil {
		return nil, err
	}
	return dev.Peers, nil
}

// Greet turns persistent keepalive on, which makes the kernel send one at
// once, and back to what the configuration says.
func (d *kernelDevice) Greet(peer wgtypes.Key, keepalive time.Duration) error {
	if keepalive > 0 {
		return nil // configuring the peer already sent one
	}
	on, off := time.Second, time.Duration(0)
	for _, ka := range []*time.Duration{&on, &off} {
		pc := wgtypes.PeerConfig{PublicKey: peer, UpdateOnly: true, PersistentKeepaliveInterval: ka}
		if err := d.Configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{pc}}); err != nil {
			return err
		}
	}
	return nil
}

// Close leaves the link in place: the kernel keeps carrying pod traffic
// while flanneld restarts.
func (d *kernelDevice) Close() error { return d.wg.Close() }
