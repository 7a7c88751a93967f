package wireguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Mode says how IPv4 and IPv6 share devices, as upstream defines it.
type Mode string

const (
	// Separate is one device per family: flannel-wg for IPv4 on
	// ListenPort, flannel-wg-v6 for IPv6 on ListenPortV6.
	Separate Mode = "separate"
	// Auto is one device for both families, reaching each peer over
	// whichever public address is likelier to work.
	Auto Mode = "auto"
	// IPv4 is one device for both families, peers reached over IPv4.
	IPv4 Mode = "ipv4"
	// IPv6 is one device for both families, peers reached over IPv6.
	IPv6 Mode = "ipv6"
)

// Implementation chooses the kernel module or wireguard-go.
type Implementation string

const (
	ImplAuto      Implementation = "auto"
	ImplKernel    Implementation = "kernel"
	ImplUserspace Implementation = "userspace"
)

const (
	defaultPort   = 51820
	defaultPortV6 = 51821
	// overhead is what upstream subtracts: outer IPv6 header (40, the
	// larger of the two), UDP (8), WireGuard type, key index and nonce
	// (16), authentication tag (16).
	overhead = 80
	minMTUv4 = 576
	minMTUv6 = 1280
)

// Options are the wireguard keys of net-conf.json's Backend object.
type Options struct {
	ListenPort   int
	ListenPortV6 int
	// PSK is an optional base64 pre-shared key, the same on every node.
	PSK string
	// PersistentKeepaliveInterval is in seconds (0: off), as upstream.
	PersistentKeepaliveInterval int
	Mode                        Mode
	// MTU is the underlay MTU; 0 means the external interface's. Devices
	// and pods get MTU − 80.
	MTU            int
	Implementation Implementation

	psk *wgtypes.Key
}

func parseOptions(raw json.RawMessage) (Options, error) {
	o := Options{ListenPort: defaultPort, ListenPortV6: defaultPortV6, Mode: Separate, Implementation: ImplAuto}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return o, fmt.Errorf("wireguard backend config: %w", err)
		}
	}
	switch {
	case o.ListenPort <= 0 || o.ListenPort > 65535 || o.ListenPortV6 <= 0 || o.ListenPortV6 > 65535:
		return o, fmt.Errorf("wireguard backend config: ListenPort %d / ListenPortV6 %d must be within 1..65535", o.ListenPort, o.ListenPortV6)
	case o.Mode != Separate && o.Mode != Auto && o.Mode != IPv4 && o.Mode != IPv6:
		return o, fmt.Errorf("wireguard backend config: Mode %q is none of separate, auto, ipv4, ipv6", o.Mode)
	case o.Implementation != ImplAuto && o.Implementation != ImplKernel && o.Implementation != ImplUserspace:
		return o, fmt.Errorf("wireguard backend config: Implementation %q is none of auto, kernel, userspace", o.Implementation)
	case o.PersistentKeepaliveInterval < 0 || o.PersistentKeepaliveInterval > 65535:
		return o, fmt.Errorf("wireguard backend config: PersistentKeepaliveInterval %d is outside 0..65535 seconds", o.PersistentKeepaliveInterval)
	case o.MTU < 0 || (o.MTU > 0 && o.MTU-overhead < minMTUv4):
		return o, fmt.Errorf("wireguard backend config: MTU %d leaves pods less than %d bytes after the %d-byte encapsulation", o.MTU, minMTUv4, overhead)
	}
	if o.PSK != "" {
		k, err := wgtypes.ParseKey(o.PSK)
		if err != nil {
			return o, fmt.Errorf("wireguard backend config: PSK is not a base64 WireGuard key (make one with `wg genpsk`): %w", err)
		}
		o.psk = &k
	}
	return o, nil
}

func (o Options) keepalive() *time.Duration {
	d := time.Duration(o.PersistentKeepaliveInterval) * time.Second
	return &d
}

// leaseData is the BackendData (and BackendV6Data) other nodes read:
// {"PublicKey":"<base64>"}, as upstream writes it.
type leaseData struct {
	PublicKey string
}

func encodeLeaseData(k wgtypes.Key) json.RawMessage {
	b, _ := json.Marshal(leaseData{PublicKey: k.String()})
	return b
}

func decodeLeaseData(raw json.RawMessage) (wgtypes.Key, error) {
	var d leaseData
	if err := json.Unmarshal(raw, &d); err != nil {
		return wgtypes.Key{}, fmt.Errorf("decode wireguard BackendData %s: %w", raw, err)
	}
	k, err := wgtypes.ParseKey(d.PublicKey)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("decode wireguard BackendData: PublicKey %q: %w", d.PublicKey, err)
	}
	return k, nil
}
