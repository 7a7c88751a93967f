// Package config parses and validates the network configuration
// (net-conf.json, or the value of <prefix>/config in etcd).
package config

import (
	"encoding/json"
	"net/netip"
)

// Config is the validated network configuration. After Parse every default
// is filled in, so callers never re-derive SubnetLen, SubnetMin and so on.
type Config struct {
	EnableIPv4     bool
	EnableIPv6     bool
	EnableNFTables bool

	Network   netip.Prefix // valid iff EnableIPv4
	SubnetLen int
	SubnetMin netip.Addr
	SubnetMax netip.Addr

	IPv6Network   netip.Prefix // valid iff EnableIPv6
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr

	// BackendType is Backend's "Type" field, lower-cased (DefaultBackend,
	// "udp", when absent).
	BackendType string
	// Backend is the raw backend object; each backend decodes its own options.
	Backend json.RawMessage
	// Datapath is Backend's "Datapath" field: DatapathKernel (the default)
	// or DatapathEBPF, the opt-in eBPF fast path (host-gw and vxlan only).
	Datapath string

	// Warnings are what Parse accepted but the operator should fix (no
	// backend named, host bits in a network). Parse runs again whenever the
	// config is re-read, so the daemon logs them once, at start-up.
	Warnings []string
}
