package vxlan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
)

// Options are the vxlan keys of net-conf.json's Backend object.
type Options struct {
	VNI           int
	Port          int // 0: the kernel's default, 8472
	GBP           bool
	Learning      bool
	DirectRouting bool
	MTU           int // the underlay MTU, as upstream reads it; 0: the external interface's. The device gets MTU minus the overhead.
	// DisableTxChecksumOffload turns tx-checksum-ip-generic off on the
	// device also on kernels 5.7 and later (before 5.7 it is always off).
	DisableTxChecksumOffload bool
}

const (
	defaultVNI = 1
	// kernelDefaultPort is what Linux uses when no port is given; peers
	// running upstream flanneld use the same default.
	kernelDefaultPort = 8472
	// overheadV4 is outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
	overheadV4 = 50
	// overheadV6 is the same with an outer IPv6 header (40).
	overheadV6 = 70
	// minMTUv6 is the smallest link MTU IPv6 allows (RFC 8200).
	minMTUv6 = 1280
)

func parseOptions(raw json.RawMessage) (Options, error) {
	o := Options{VNI: defaultVNI}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return o, fmt.Errorf("vxlan backend config: %w", err)
		}
	}
	switch {
	case o.VNI < 0 || o.VNI > 1<<24-1:
		return o, fmt.Errorf("vxlan backend config: VNI %d is outside 0..16777215", o.VNI)
	case o.Port < 0 || o.Port > 65535:
		return o, fmt.Errorf("vxlan backend config: Port %d is outside 0..65535", o.Port)
	case o.MTU < 0 || (o.MTU > 0 && o.MTU < 576):
		return o, fmt.Errorf("vxlan backend config: MTU %d is below the IPv4 minimum of 576", o.MTU)
	}
	return o, nil
}

// leaseData is the BackendData other nodes read: {"VNI":1,"VtepMAC":"..."},
// as upstream writes it.
type leaseData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

func decodeLeaseData(raw json.RawMessage) (net.HardwareAddr, error) {
	var d leaseData
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("decode vxlan BackendData %s: %w", raw, err)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil {
		return nil, fmt.Errorf("decode vxlan BackendData: VtepMAC %q: %w", d.VtepMAC, err)
	}
	return mac, nil
}
