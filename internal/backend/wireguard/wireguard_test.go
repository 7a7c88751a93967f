package wireguard

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/ipnet"
)

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(nil)
	if err != nil || o.ListenPort != 51820 || o.ListenPortV6 != 51821 || o.Mode != Separate || o.Implementation != ImplAuto || o.psk != nil {
		t.Errorf("defaults: %+v %v", o, err)
	}
	psk, _ := wgtypes.GenerateKey()
	o, err = parseOptions([]byte(`{"Type":"wireguard","PSK":"` + psk.String() + `","PersistentKeepaliveInterval":25,"Mode":"auto","Implementation":"userspace"}`))
	if err != nil || o.psk == nil || *o.psk != psk || *o.keepalive() != 25*time.Second || o.Mode != Auto || o.Implementation != ImplUserspace {
		t.Errorf("explicit: %+v %v", o, err)
	}
	for _, bad := range []string{`{"Mode":"both"}`, `{"Implementation":"fast"}`, `{"PSK":"nope"}`, `{"ListenPort":0}`, `{"MTU":500}`, `{"PersistentKeepaliveInterval":-1}`} {
		if _, err := parseOptions([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// BackendData is exactly upstream's {"PublicKey":"<base64>"}.
func TestLeaseData(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	raw := encodeLeaseData(k.PublicKey())
	if want := `{"PublicKey":"` + k.PublicKey().String() + `"}`; string(raw) != want {
		t.Errorf("BackendData %s, want %s", raw, want)
	}
	if got, err := decodeLeaseData(raw); err != nil || got != k.PublicKey() {
		t.Errorf("decode: %v %v", got, err)
	}
	if _, err := decodeLeaseData([]byte(`{"PublicKey":"x"}`)); err == nil {
		t.Error("a bad key decoded")
	}
}

// The key file is created 0600 and the same key is read back later.
func TestKeyFileReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "wgkey")
	k1, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v, want 0600", st.Mode(), err)
	}
	k2, err := loadOrCreateKey(path)
	if err != nil || k2 != k1 {
		t.Errorf("second load gave another key (%v)", err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a broken key file gave %v, want an error naming it", err)
	}
}

// A key file found open to other users is forced back to 0600 and still
// used; upstream's 0400 is kept as it is.
func TestKeyFileModeTightened(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wgkey")
	k1, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ set, want os.FileMode }{{0o644, 0o600}, {0o666, 0o600}, {0o640, 0o600}, {0o400, 0o400}, {0o600, 0o600}} {
		// Chmod, not WriteFile's mode: the umask must not soften the test.
		if err := os.Chmod(path, tc.set); err != nil {
			t.Fatal(err)
		}
		k2, err := loadOrCreateKey(path)
		if err != nil || k2 != k1 {
			t.Fatalf("mode %04o: key %v, %v; want the same key", tc.set, k2 == k1, err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != tc.want {
			t.Errorf("key file found with mode %04o is now %04o (%v), want %04o", tc.set, st.Mode().Perm(), err, tc.want)
		}
	}
}

// A key directory other users may write to is reported; a sticky one
// (/tmp) or an owner-only one is not.
func TestKeyDirProblem(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		bad  bool
	}{{0o777, true}, {0o775, true}, {0o757, true}, {0o755, false}, {0o700, false}, {0o777 | os.ModeSticky, false}} {
		if err := os.Chmod(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		msg := keyDirProblem(dir)
		if (msg != "") != tc.bad || (tc.bad && (!strings.Contains(msg, dir) || !strings.Contains(msg, "chmod go-w"))) {
			t.Errorf("mode %v: %q", tc.mode, msg)
		}
	}
	_ = os.Chmod(dir, 0o700)
}

// What flanneld writes to a userspace device reads back the same.
func TestUAPIRoundTrip(t *testing.T) {
	priv, _ := wgtypes.GeneratePrivateKey()
	pub, _ := wgtypes.GeneratePrivateKey()
	psk, _ := wgtypes.GenerateKey()
	port, ka := 51820, 25*time.Second
	cfg := wgtypes.Config{PrivateKey: &priv, ListenPort: &port, ReplacePeers: true, Peers: []wgtypes.PeerConfig{{
		PublicKey: pub.PublicKey(), PresharedKey: &psk, Endpoint: &net.UDPAddr{IP: net.ParseIP("198.51.100.2"), Port: 51820},
		PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true,
		AllowedIPs: []net.IPNet{*ipnet.FromPrefix(netip.MustParsePrefix("10.244.1.0/24")), *ipnet.FromPrefix(netip.MustParsePrefix("fd00:10:244:1::/64"))},
	}}}
	set := uapiSet(cfg)
	for _, line := range []string{"listen_port=51820", "replace_peers=true", "endpoint=198.51.100.2:51820",
		"persistent_keepalive_interval=25", "replace_allowed_ips=true", "allowed_ip=10.244.1.0/24", "allowed_ip=fd00:10:244:1::/64"} {
		if !strings.Contains(set, line+"\n") {
			t.Errorf("set lacks %q:\n%s", line, set)
		}
	}
	// A get answer has the same keys for the peer, plus counters.
	get := strings.Replace(set, "replace_peers=true\n", "", 1) + "last_handshake_time_sec=1700000000\ntx_bytes=92\nrx_bytes=0\n"
	peers, err := parseUAPIPeers(get)
	if err != nil || len(peers) != 1 {
		t.Fatalf("parse: %v %v", peers, err)
	}
	p := peers[0]
	if p.PublicKey != pub.PublicKey() || p.PresharedKey != psk || p.Endpoint.String() != "198.51.100.2:51820" ||
		len(p.AllowedIPs) != 2 || p.TransmitBytes != 92 || p.LastHandshakeTime.Unix() != 1700000000 || p.PersistentKeepaliveInterval != ka {
		t.Errorf("parsed %+v", p)
	}
	rm := uapiSet(wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: pub.PublicKey(), Remove: true}}})
	if !strings.HasSuffix(rm, "\nremove=true\n") || strings.Count(rm, "\n") != 2 {
		t.Errorf("remove renders as %q", rm)
	}
}

// Endpoint choice per Mode, as upstream: auto prefers IPv4 unless it is
// private and both ends have a public IPv6 address.
func TestEndpoint(t *testing.T) {
	a := netip.MustParseAddr
	pub4, priv4, pub6 := a("198.51.100.2"), a("10.0.0.2"), a("2001:db8::2")
	for _, tc := range []struct {
		mode       Mode
		v4, v6     bool
		local6     netip.Addr
		ip4, ip6   netip.Addr
		want       netip.Addr
		wantFailed bool
	}{
		{Separate, true, false, netip.Addr{}, pub4, pub6, pub4, false},
		{Separate, false, true, netip.Addr{}, pub4, pub6, pub6, false},
		{IPv6, true, true, netip.Addr{}, pub4, pub6, pub6, false},
		{IPv4, true, true, netip.Addr{}, netip.Addr{}, pub6, netip.Addr{}, true},
		{Auto, true, true, a("2001:db8::1"), pub4, pub6, pub4, false},
		{Auto, true, true, a("2001:db8::1"), priv4, pub6, pub6, false},
		{Auto, true, true, netip.Addr{}, priv4, pub6, priv4, false},
		{Auto, true, true, netip.Addr{}, netip.Addr{}, pub6, pub6, false},
	} {
		n := &network{b: &Backend{backend.Tunnel[Options]{Opts: Options{Mode: tc.mode}, Ext: &backend.ExternalInterface{ExtV6Addr: tc.local6}}}}
		tun := &tunnel{n: n, v4: tc.v4, v6: tc.v6}
		got, err := tun.endpoint(tc.ip4, tc.ip6)
		if (err != nil) != tc.wantFailed || got != tc.want {
			t.Errorf("%s v4=%v v6=%v %s/%s: got %s %v, want %s", tc.mode, tc.v4, tc.v6, tc.ip4, tc.ip6, got, err, tc.want)
		}
	}
}
