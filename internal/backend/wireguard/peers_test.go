package wireguard

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// fakeDevice is a WireGuard device's peer list in memory, standing in for
// the kernel module this machine lacks.
type fakeDevice struct {
	peers map[wgtypes.Key]wgtypes.PeerConfig
}

func (d *fakeDevice) Name() string { return DeviceName }
func (d *fakeDevice) Kind() string { return "fake" }
func (d *fakeDevice) Close() error { return nil }

func (d *fakeDevice) Recreate(int) error {
	clear(d.peers)
	return nil
}

func (d *fakeDevice) Greet(wgtypes.Key, time.Duration) error { return nil }

func (d *fakeDevice) Configure(cfg wgtypes.Config) error {
	for _, p := range cfg.Peers {
		if p.Remove {
			delete(d.peers, p.PublicKey)
			continue
		}
		d.peers[p.PublicKey] = p
	}
	return nil
}

func (d *fakeDevice) Peers() ([]wgtypes.Peer, error) {
	var out []wgtypes.Peer
	for k, p := range d.peers {
		out = append(out, wgtypes.Peer{PublicKey: k, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs})
	}
	return out, nil
}

func wgLease(t *testing.T, subnet, public string) (lease.Lease, wgtypes.Key) {
	t.Helper()
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{BackendType: TypeName,
		PublicIP: netip.MustParseAddr(public), BackendData: json.RawMessage(encodeLeaseData(priv.PublicKey()))}}, priv.PublicKey()
}

func fakeNetwork(d *fakeDevice) *network {
	n := &network{b: &Backend{backend.Tunnel[Options]{Opts: Options{Mode: Separate, ListenPort: 51820}}},
		cfg: &config.Config{Network: netip.MustParsePrefix("10.244.0.0/16"), EnableIPv4: true}}
	t := newTunnel(n, d, 51820, true, false)
	n.tunnels = []*tunnel{t}
	n.peers = backend.NewPeers(backend.PeersConfig{Name: "wireguard", Sets: []backend.PeerEngine{t.set}, Owned: n.owned})
	return n
}

// Each lease becomes a peer with its subnet as allowed IPs; a peer no
// lease accounts for is removed after the first batch; a peer removed by
// hand is restored by the repair; a node with a new key replaces its old
// peer; a removed lease's peer goes.
func TestDevicePeersFollowLeases(t *testing.T) {
	d := &fakeDevice{peers: map[wgtypes.Key]wgtypes.PeerConfig{}}
	stranger, _ := wgtypes.GenerateKey()
	d.peers[stranger] = wgtypes.PeerConfig{PublicKey: stranger}
	n := fakeNetwork(d)
	l2, k2 := wgLease(t, "10.244.2.0/24", "198.51.100.12")
	l3, k3 := wgLease(t, "10.244.3.0/24", "198.51.100.13")
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Added, Lease: l2}, {Type: lease.Added, Lease: l3}})
	if len(d.peers) != 2 || d.peers[k2].AllowedIPs[0].String() != "10.244.2.0/24" || d.peers[k2].Endpoint.String() != "198.51.100.12:51820" {
		t.Fatalf("peers %v: want node 2 and 3 only, node 2 with 10.244.2.0/24 at 198.51.100.12:51820", d.peers)
	}

	delete(d.peers, k3)
	r := backend.Repairs{}
	n.peers.Locked(func() {
		if err := n.tunnels[0].set.Repair(r, true); err != nil {
			t.Fatal(err)
		}
	})
	if _, ok := d.peers[k3]; !ok || r["peer"] != 1 {
		t.Fatalf("repairs %v, peers %v: want node 3's peer restored and counted", r, d.peers)
	}

	l3b, k3b := wgLease(t, "10.244.3.0/24", "198.51.100.13")
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Added, Lease: l3b}})
	if _, old := d.peers[k3]; old || d.peers[k3b].AllowedIPs == nil {
		t.Fatalf("after node 3's new key: peers %v; want the new key's peer only", d.peers)
	}
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Removed, Lease: l3b}})
	if len(d.peers) != 1 {
		t.Fatalf("after node 3 left: peers %v, want node 2's only", d.peers)
	}
}

// A peer on the device is as wanted when its allowed IPs are, in any
// order; its endpoint is where WireGuard last heard it, which it updates
// by itself when a peer roams.
func TestDevicePeerSame(t *testing.T) {
	w := devicePeers{}
	want := peer{allowed: joinSorted([]string{"fd00:10:244:2::/64", "10.244.2.0/24"}), endpoint: netip.MustParseAddrPort("198.51.100.12:51820")}
	roamed := peer{allowed: joinSorted([]string{"10.244.2.0/24", "fd00:10:244:2::/64"}), endpoint: netip.MustParseAddrPort("203.0.113.7:40000")}
	if !w.Same(want, roamed) {
		t.Error("a roamed peer with the same allowed IPs counts as drift")
	}
	if w.Same(want, peer{allowed: "10.244.2.0/24"}) {
		t.Error("a peer missing an allowed prefix counts as in place")
	}
}
