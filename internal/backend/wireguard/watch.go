package wireguard

import (
	"context"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/pace"
)

// handshakeTimeout is how long packets may go to a peer without a
// completed handshake before the operator is told. WireGuard retries a
// handshake every 5 s, so this is three attempts.
const handshakeTimeout = 15 * time.Second

// handshakeWatch is one peer's state: since when packets have gone to it
// without a handshake, and whether that was reported.
type handshakeWatch struct {
	since    time.Time
	reported bool
	lastTx   int64
}

// sessionLifetime is WireGuard's RejectAfterTime: an older handshake no
// longer keys any traffic.
const sessionLifetime = 180 * time.Second

// watchHandshakes reports peers that are sent packets but never complete
// a handshake. WireGuard itself stays silent then; the usual causes are a
// PSK that differs between the nodes and a blocked UDP port.
func (n *network) watchHandshakes(ctx context.Context, every time.Duration) {
	pace.Every(ctx, every, 0, func(context.Context) bool {
		now := time.Now()
		n.peers.Locked(func() {
			for _, t := range n.tunnels {
				if t.checkHandshakes(now) {
					n.peers.Kick()
				}
			}
		})
		return true
	})
}

// checkHandshakes reports, and says whether the device lacks a peer a
// lease wants (removed by hand: no netlink notification tells the healer).
func (t *tunnel) checkHandshakes(now time.Time) (missing bool) {
	states, err := t.dev.Peers()
	if err != nil {
		klog.V(2).Infof("wireguard: %s: list peers: %v", t.dev.Name(), err)
		return false
	}
	byKey := map[[32]byte]peer{}
	t.set.Each(func(_ string, p peer) { byKey[p.key] = p })
	for _, st := range states {
		p, ours := byKey[st.PublicKey]
		if !ours {
			continue
		}
		delete(byKey, st.PublicKey)
		t.checkPeer(p, st, now)
	}
	return len(byKey) > 0
}

// checkPeer follows one peer's handshakes and reports one overdue.
func (t *tunnel) checkPeer(p peer, st wgtypes.Peer, now time.Time) {
	w := t.watch[st.PublicKey]
	if w == nil {
		w = &handshakeWatch{}
		t.watch[st.PublicKey] = w
	}
	sending := st.TransmitBytes > w.lastTx
	w.lastTx = st.TransmitBytes
	hs := st.LastHandshakeTime
	if hs.Unix() > 0 && now.Sub(hs) < sessionLifetime {
		if w.reported {
			klog.Infof("wireguard: %s: handshake with peer %s (%s) completed", t.dev.Name(), p.allowed, p.endpoint)
		}
		w.since, w.reported = time.Time{}, false
		return
	}
	if !sending && w.since.IsZero() {
		return // nothing sent since the session lapsed: no handshake is due
	}
	if w.since.IsZero() {
		w.since = now
	}
	if !w.reported && now.Sub(w.since) >= handshakeTimeout {
		w.reported = true
		klog.Errorf("wireguard: %s: no handshake with peer %s (%s, public key %s) in %s although packets are sent to it. "+
			"Likely causes: the Backend PSK differs between the nodes (it must be the same on all), "+
			"or UDP %d is blocked between them", t.dev.Name(), p.allowed, p.endpoint, p.key, now.Sub(w.since).Round(time.Second), p.endpoint.Port())
	}
}
