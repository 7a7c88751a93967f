package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	wgdevice "golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/preflight"
)

// DefaultSocketDir is where wireguard-go, and so `wg show`, look for a
// userspace device's control socket.
const DefaultSocketDir = "/var/run/wireguard"

// SocketDir is the control sockets' directory from the environment
// ($FLANNEL_WIREGUARD_SOCKET_DIR); several flanneld processes sharing one
// file system (a testbed or `flannelctl lab` on one machine) need one each.
func SocketDir() string {
	if d := os.Getenv("FLANNEL_WIREGUARD_SOCKET_DIR"); d != "" {
		return d
	}
	return DefaultSocketDir
}

// userDevice is wireguard-go running inside flanneld on a TUN device. It
// lives as long as the process: a restart re-creates it, and so does the
// healer when someone deletes the TUN interface.
type userDevice struct {
	name   string
	dev    atomic.Pointer[wgdevice.Device]
	ln     net.Listener
	socket string
	// setByHand is called after a control-socket client changed the
	// device (`wg set`): no netlink notification reports that, and the
	// healer must compare the peers with the leases at once.
	setByHand atomic.Pointer[func()]
}

func newUserDevice(name string, mtu int) (*userDevice, error) {
	d := &userDevice{name: name}
	if err := d.open(mtu); err != nil {
		return nil, err
	}
	if err := d.listen(); err != nil {
		// Only `wg show` is lost; flanneld configures the device directly.
		klog.Warningf("wireguard: no control socket for %s (`wg show %s` will not see it): %v", name, name, err)
	}
	return d, nil
}

// open creates the TUN interface and starts wireguard-go on it.
func (d *userDevice) open(mtu int) error {
	t, err := tun.CreateTUN(d.name, mtu)
	if err != nil {
		return fmt.Errorf("create TUN device %s for userspace WireGuard: %w (is another flanneld running on this node? "+
			"In a DaemonSet, /dev/net/tun must be mounted: %s)", d.name, err, preflight.TunPatch)
	}
	logger := &wgdevice.Logger{
		Verbosef: func(format string, args ...any) {
			klog.V(4).Infof("wireguard-go %s: "+format, append([]any{d.name}, args...)...)
		},
		Errorf: func(format string, args ...any) {
			klog.V(1).Infof("wireguard-go %s: "+format, append([]any{d.name}, args...)...)
		},
	}
	// Throughput rests on the offloads: whole TCP segments in and
	// coalesced ones out of the TUN device, batches on the UDP socket.
	klog.Infof("wireguard: %s: TUN offloads %v, batches of %d", d.name, t.BatchSize() > 1, t.BatchSize())
	d.dev.Store(wgdevice.NewDevice(t, conn.NewStdNetBind(), logger))
	return nil
}

// Recreate starts afresh on a new TUN interface after the old one was
// deleted. wireguard-go has closed itself when its interface went (its
// reads fail); Close here waits until that has released the UDP port.
// The caller configures the key, the port and the peers again.
func (d *userDevice) Recreate(mtu int) error {
	d.dev.Load().Close()
	return d.open(mtu)
}

// listen serves the UAPI control socket that `wg` and wgctrl use.
func (d *userDevice) listen() error {
	dir := SocketDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d.socket = filepath.Join(dir, d.name+".sock")
	_ = os.Remove(d.socket) // left by a process that died
	ln, err := net.Listen("unix", d.socket)
	if err != nil {
		return err
	}
	if err := os.Chmod(d.socket, 0o600); err != nil {
		ln.Close()
		return err
	}
	d.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					klog.Errorf("wireguard: control socket %s: %v", d.socket, err)
				}
				return
			}
			go d.serve(c)
		}
	}()
	return nil
}

// serve answers one control-socket client, then reports a change it made.
func (d *userDevice) serve(c net.Conn) {
	w := &setWatch{Conn: c}
	d.dev.Load().IpcHandle(w)
	if f := d.setByHand.Load(); w.set && f != nil {
		(*f)()
	}
}

// setWatch notes whether a control-socket client sent a "set" operation.
type setWatch struct {
	net.Conn
	set bool
}

func (w *setWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if bytes.Contains(p[:n], []byte("set=1\n")) {
		w.set = true
	}
	return n, err
}

// OnSetByHand makes f run after each change made through the control
// socket.
func (d *userDevice) OnSetByHand(f func()) { d.setByHand.Store(&f) }

func (d *userDevice) Name() string { return d.name }
func (d *userDevice) Kind() string { return "userspace" }

func (d *userDevice) Configure(cfg wgtypes.Config) error {
	dev := d.dev.Load()
	if err := dev.IpcSet(uapiSet(cfg)); err != nil {
		return err
	}
	// A fresh device is down until told otherwise.
	return dev.Up()
}

func (d *userDevice) Peers() ([]wgtypes.Peer, error) {
	s, err := d.dev.Load().IpcGet()
	if err != nil {
		return nil, err
	}
	return parseUAPIPeers(s)
}

func (d *userDevice) Greet(peer wgtypes.Key, _ time.Duration) error {
	p := d.dev.Load().LookupPeer(wgdevice.NoisePublicKey(peer))
	if p == nil {
		return fmt.Errorf("no peer %s", peer)
	}
	p.SendKeepalive()
	return nil
}

// Close stops the device; its TUN interface and routes go with it.
func (d *userDevice) Close() error {
	if d.ln != nil {
		d.ln.Close()
		_ = os.Remove(d.socket)
	}
	d.dev.Load().Close()
	return nil
}
