package wireguard

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// uapiSet renders a wgctrl configuration in WireGuard's cross-platform
// configuration protocol ("set=1" body), which wireguard-go's IpcSet
// reads.
func uapiSet(cfg wgtypes.Config) string {
	var b strings.Builder
	kv := func(k, v string) { b.WriteString(k + "=" + v + "\n") }
	if cfg.PrivateKey != nil {
		kv("private_key", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		kv("listen_port", strconv.Itoa(*cfg.ListenPort))
	}
	if cfg.ReplacePeers {
		kv("replace_peers", "true")
	}
	for _, p := range cfg.Peers {
		kv("public_key", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			kv("remove", "true")
			continue
		}
		if p.PresharedKey != nil {
			kv("preshared_key", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != nil {
			kv("endpoint", p.Endpoint.String())
		}
		if p.PersistentKeepaliveInterval != nil {
			kv("persistent_keepalive_interval", strconv.Itoa(int(p.PersistentKeepaliveInterval.Seconds())))
		}
		if p.ReplaceAllowedIPs {
			kv("replace_allowed_ips", "true")
		}
		for _, ip := range p.AllowedIPs {
			kv("allowed_ip", ip.String())
		}
	}
	return b.String()
}

// parseUAPIPeers reads the peers from a "get=1" answer.
func parseUAPIPeers(s string) ([]wgtypes.Peer, error) {
	var peers []wgtypes.Peer
	var cur *wgtypes.Peer
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			peers = append(peers, wgtypes.Peer{})
			cur = &peers[len(peers)-1]
		}
		if cur == nil {
			continue // interface-level keys come first
		}
		if err := setPeerField(cur, k, v); err != nil {
			return nil, fmt.Errorf("parse %s=%s: %w", k, v, err)
		}
	}
	return peers, sc.Err()
}

func setPeerField(p *wgtypes.Peer, k, v string) error {
	switch k {
	case "public_key", "preshared_key":
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != wgtypes.KeyLen {
			return fmt.Errorf("bad key")
		}
		if k == "public_key" {
			copy(p.PublicKey[:], b)
		} else {
			copy(p.PresharedKey[:], b)
		}
	case "endpoint":
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			return err
		}
		p.Endpoint = net.UDPAddrFromAddrPort(ap)
	case "last_handshake_time_sec":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return err
		}
		if n != 0 {
			p.LastHandshakeTime = time.Unix(n, 0)
		}
	case "tx_bytes", "rx_bytes":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return err
		}
		if k == "tx_bytes" {
			p.TransmitBytes = n
		} else {
			p.ReceiveBytes = n
		}
	case "persistent_keepalive_interval":
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		p.PersistentKeepaliveInterval = time.Duration(n) * time.Second
	case "allowed_ip":
		_, ipn, err := net.ParseCIDR(v)
		if err != nil {
			return err
		}
		p.AllowedIPs = append(p.AllowedIPs, *ipn)
	}
	return nil
}

// ReadPeers asks a userspace device's control socket (in SocketDir(),
// named <device>.sock) for its peers, as `wg show` does.
func ReadPeers(socket string) ([]wgtypes.Peer, error) {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return nil, fmt.Errorf("%s: %w", socket, err)
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "errno="); ok {
			if v != "0" {
				return nil, fmt.Errorf("%s: errno %s", socket, v)
			}
			return parseUAPIPeers(b.String())
		}
		b.WriteString(line + "\n")
	}
	return nil, fmt.Errorf("%s: answer ended early: %v", socket, sc.Err())
}
