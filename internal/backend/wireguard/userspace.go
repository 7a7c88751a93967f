package wireguard

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
// lives as long as the process: a restart re-creates it.
type userDevice struct {
	name   string
	dev    *wgdevice.Device
	ln     net.Listener
	socket string
}

func newUserDevice(name string, mtu int) (*userDevice, error) {
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN device %s for userspace WireGuard: %w (is another flanneld running on this node? "+
			"In a DaemonSet, /dev/net/tun must be mounted: %s)", name, err, preflight.TunPatch)
	}
	logger := &wgdevice.Logger{
		Verbosef: func(format string, args ...any) {
			klog.V(4).Infof("wireguard-go %s: "+format, append([]any{name}, args...)...)
		},
		Errorf: func(format string, args ...any) {
			klog.V(1).Infof("wireguard-go %s: "+format, append([]any{name}, args...)...)
		},
	}
	// Throughput rests on the offloads: whole TCP segments in and
	// coalesced ones out of the TUN device, batches on the UDP socket.
	klog.Infof("wireguard: %s: TUN offloads %v, batches of %d", name, t.BatchSize() > 1, t.BatchSize())
	d := &userDevice{name: name, dev: wgdevice.NewDevice(t, conn.NewStdNetBind(), logger)}
	if err := d.listen(); err != nil {
		// Only `wg show` is lost; flanneld configures the device directly.
		klog.Warningf("wireguard: no control socket for %s (`wg show %s` will not see it): %v", name, name, err)
	}
	return d, nil
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
			go d.dev.IpcHandle(c)
		}
	}()
	return nil
}

func (d *userDevice) Name() string { return d.name }
func (d *userDevice) Kind() string { return "userspace" }

func (d *userDevice) Configure(cfg wgtypes.Config) error {
	if err := d.dev.IpcSet(uapiSet(cfg)); err != nil {
		return err
	}
	// A fresh device is down until told otherwise.
	return d.dev.Up()
}

func (d *userDevice) Peers() ([]wgtypes.Peer, error) {
	s, err := d.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	return parseUAPIPeers(s)
}

func (d *userDevice) Greet(peer wgtypes.Key, _ time.Duration) error {
	p := d.dev.LookupPeer(wgdevice.NoisePublicKey(peer))
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
	d.dev.Close()
	return nil
}
