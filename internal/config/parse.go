package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
)

// DefaultBackend is the backend used when net-conf.json names none. It is
// upstream's fallback: in a cluster that mixes upstream nodes with ours (a
// rolling migration with the classic minimal config), every node must pick
// the same data plane, however slow udp is.
const DefaultBackend = "udp"

const (
	defaultSubnetLen     = 24
	defaultIPv6SubnetLen = 64
	// Longest subnets that still leave a node usable host addresses
	// (network, gateway, one pod, broadcast for IPv4).
	maxSubnetLen     = 30
	maxIPv6SubnetLen = 126
)

// wireConfig is net-conf.json as written by operators. Pointers tell
// "absent" from "zero" where the default depends on it.
type wireConfig struct {
	Network        string
	SubnetLen      int
	SubnetMin      string
	SubnetMax      string
	EnableIPv4     *bool
	EnableIPv6     bool
	IPv6Network    string
	IPv6SubnetLen  int
	IPv6SubnetMin  string
	IPv6SubnetMax  string
	EnableNFTables bool
	Backend        json.RawMessage
}

// family holds the names and limits that differ between the IPv4 and IPv6
// halves of the config, so one validator serves both.
type family struct {
	v6                                         bool
	networkField, lenField, minField, maxField string
	defaultLen, maxLen                         int
	example                                    string
}

var (
	familyV4 = family{
		networkField: "Network", lenField: "SubnetLen", minField: "SubnetMin", maxField: "SubnetMax",
		defaultLen: defaultSubnetLen, maxLen: maxSubnetLen, example: "10.244.0.0/16",
	}
	familyV6 = family{
		v6:           true,
		networkField: "IPv6Network", lenField: "IPv6SubnetLen", minField: "IPv6SubnetMin", maxField: "IPv6SubnetMax",
		defaultLen: defaultIPv6SubnetLen, maxLen: maxIPv6SubnetLen, example: "fd00:10:244::/56",
	}
)

// Parse decodes net-conf.json (or the value of <prefix>/config in etcd),
// fills in every default and refuses configurations flanneld cannot run.
// Unknown fields are ignored, as upstream does, but each gets a warning: a
// misspelt key ("Subnetlen" is fine, "SubnetLength" is not) would otherwise
// silently leave its default in place.
func Parse(data []byte) (*Config, error) {
	var w wireConfig
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("error parsing subnet config: %w", err)
	}
	c := &Config{EnableIPv4: true, EnableIPv6: w.EnableIPv6, EnableNFTables: w.EnableNFTables}
	c.Warnings = unknownKeys(data)
	if w.EnableIPv4 != nil {
		c.EnableIPv4 = *w.EnableIPv4
	}
	if !c.EnableIPv4 && !c.EnableIPv6 {
		return nil, errors.New("EnableIPv4 and EnableIPv6 are both false: enable at least one address family")
	}
	if c.EnableIPv4 {
		r, err := familyV4.resolve(w.Network, w.SubnetLen, w.SubnetMin, w.SubnetMax)
		if err != nil {
			return nil, err
		}
		c.Warnings = append(c.Warnings, r.warnings...)
		c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax = r.network, r.subnetLen, r.min, r.max
	}
	if c.EnableIPv6 {
		r, err := familyV6.resolve(w.IPv6Network, w.IPv6SubnetLen, w.IPv6SubnetMin, w.IPv6SubnetMax)
		if err != nil {
			return nil, err
		}
		c.Warnings = append(c.Warnings, r.warnings...)
		c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax = r.network, r.subnetLen, r.min, r.max
	}
	var err error
	var warn string
	if c.Backend, c.BackendType, warn, err = parseBackend(w.Backend); err != nil {
		return nil, err
	}
	if warn != "" {
		c.Warnings = append(c.Warnings, warn)
	}
	if c.Datapath, err = parseDatapath(c.Backend, c.BackendType); err != nil {
		return nil, err
	}
	if c.Datapath == DatapathEBPF && !c.EnableIPv4 {
		return nil, errors.New(`Backend: "Datapath": "ebpf" speeds up IPv4 pod traffic only, and this network has no IPv4: remove the key or enable IPv4`)
	}
	return c, nil
}

// The values of Backend's "Datapath" key.
const (
	DatapathKernel = "kernel"
	DatapathEBPF   = "ebpf"
)

// parseDatapath reads Backend's "Datapath": absent means the kernel path;
// the eBPF fast path exists for host-gw and vxlan only.
func parseDatapath(raw json.RawMessage, backendType string) (string, error) {
	var o struct{ Datapath *string }
	if err := json.Unmarshal(raw, &o); err != nil {
		return "", fmt.Errorf("Backend: Datapath must be a string, \"kernel\" or \"ebpf\": %w", err)
	}
	if o.Datapath == nil {
		return DatapathKernel, nil
	}
	switch dp := strings.ToLower(strings.TrimSpace(*o.Datapath)); dp {
	case "", DatapathKernel:
		return DatapathKernel, nil
	case DatapathEBPF:
		if backendType != "host-gw" && backendType != "vxlan" {
			return "", fmt.Errorf("Backend: \"Datapath\": \"ebpf\" works with the host-gw and vxlan backends only, not %s: remove the key or change the backend's Type", backendType)
		}
		return dp, nil
	default:
		return "", fmt.Errorf("Backend: Datapath %q is not known: use \"kernel\" (the default) or \"ebpf\" (host-gw and vxlan)", *o.Datapath)
	}
}

type resolved struct {
	network   netip.Prefix
	subnetLen int
	min, max  netip.Addr
	warnings  []string
}

// resolve validates one address family's network, subnet length and range,
// applying upstream's defaults.
func (f family) resolve(network string, subnetLen int, minS, maxS string) (resolved, error) {
	var r resolved
	var err error
	if r.network, err = f.parseNetwork(network); err != nil {
		return r, err
	}
	if m := r.network.Masked(); m != r.network {
		// Upstream reads the network with net.ParseCIDR, which drops host
		// bits silently; a config that works there must work here.
		r.warnings = append(r.warnings, fmt.Sprintf("%s %s has host bits set: using %s (write %q to silence this warning)",
			f.networkField, r.network, m, m.String()))
		r.network = m
	}
	if err = f.refuseSpecial(r.network); err != nil {
		return r, err
	}
	if r.subnetLen, err = f.subnetLen(r.network, subnetLen); err != nil {
		return r, err
	}
	r.min = nthSubnetAddr(r.network.Addr(), 1, r.subnetLen) // the second subnet
	r.max = alignDown(lastAddr(r.network), r.subnetLen)     // the last subnet
	if minS != "" {
		if r.min, err = f.parseBound(f.minField, minS, r.network, r.subnetLen); err != nil {
			return r, err
		}
	}
	if maxS != "" {
		if r.max, err = f.parseBound(f.maxField, maxS, r.network, r.subnetLen); err != nil {
			return r, err
		}
	}
	if r.min.Compare(r.max) > 0 {
		return r, fmt.Errorf("%s %s is after %s %s: the range holds no /%d subnets of %s %s",
			f.minField, r.min, f.maxField, r.max, r.subnetLen, f.networkField, r.network)
	}
	return r, nil
}

func (f family) parseNetwork(s string) (netip.Prefix, error) {
	if s == "" {
		if f.v6 {
			return netip.Prefix{}, fmt.Errorf("IPv6Network is required when EnableIPv6 is true (e.g. \"IPv6Network\": %q)", f.example)
		}
		return netip.Prefix{}, fmt.Errorf("Network is required when EnableIPv4 is true (e.g. \"Network\": %q); set \"EnableIPv4\": false for an IPv6-only network", f.example)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %q is not a CIDR such as %s: %w", f.networkField, s, f.example, err)
	}
	if f.v6 && (!p.Addr().Is6() || p.Addr().Is4In6()) {
		return netip.Prefix{}, fmt.Errorf("IPv6Network %s is not an IPv6 network (put IPv4 networks in Network)", s)
	}
	if !f.v6 && !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("Network %s is not an IPv4 network (put IPv6 networks in IPv6Network and set \"EnableIPv6\": true)", s)
	}
	return p, nil
}

func (f family) subnetLen(network netip.Prefix, given int) (int, error) {
	n := given
	if given == 0 {
		n = f.defaultLen
		// Small networks get subnets two bits longer, so they still hold a few.
		if network.Bits() > f.defaultLen-2 {
			n = network.Bits() + 2
		}
	}
	switch {
	case given < 0:
		return 0, fmt.Errorf("%s %d must be a positive prefix length", f.lenField, given)
	case n <= network.Bits():
		return 0, fmt.Errorf("%s %d must be longer than the network's prefix length %d (%s %s)", f.lenField, n, network.Bits(), f.networkField, network)
	case n > f.maxLen && given == 0:
		return 0, fmt.Errorf("%s %s is too small: its default %s /%d leaves no usable host addresses (at most /%d); use a /%d or larger network",
			f.networkField, network, f.lenField, n, f.maxLen, f.maxLen-2)
	case n > f.maxLen:
		return 0, fmt.Errorf("%s %d leaves no usable host addresses: it must be at most %d", f.lenField, n, f.maxLen)
	}
	return n, nil
}

// parseBound checks a SubnetMin/SubnetMax style field: an address of the
// right family, inside the network, at the start of a subnet.
func (f family) parseBound(field, s string, network netip.Prefix, subnetLen int) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s %q is not an IP address: %w", field, s, err)
	}
	if a.Zone() != "" || a.Is4() == f.v6 || a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("%s %s is not an address of %s %s", field, s, f.networkField, network)
	}
	if !network.Contains(a) {
		return netip.Addr{}, fmt.Errorf("%s %s is outside %s %s", field, s, f.networkField, network)
	}
	if al := alignDown(a, subnetLen); al != a {
		return netip.Addr{}, fmt.Errorf("%s %s is not the start of a /%d subnet (%s %d): did you mean %s?", field, s, subnetLen, f.lenField, subnetLen, al)
	}
	return a, nil
}

// noBackendWarning is logged when the config names no backend: udp sends
// every packet through flanneld, which few operators choose knowingly.
const noBackendWarning = "the network config names no backend (%s): using udp, as upstream flannel does. " +
	"udp carries every pod packet through flanneld and is much slower than vxlan; " +
	"to switch, set \"Backend\": {\"Type\": \"vxlan\"} and restart flanneld on every node (nodes on different backends cannot reach each other)"

// parseBackend returns the raw Backend object, its lower-cased type, and a
// warning when the type fell back to DefaultBackend.
func parseBackend(raw json.RawMessage) (json.RawMessage, string, string, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return json.RawMessage(`{"Type":"` + DefaultBackend + `"}`), DefaultBackend,
			fmt.Sprintf(noBackendWarning, "no Backend object"), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, "", "", fmt.Errorf("Backend: must be a JSON object such as {\"Type\":\"vxlan\"}, got %s", raw)
	}
	var typ struct{ Type *string }
	if err := json.Unmarshal(raw, &typ); err != nil {
		return nil, "", "", fmt.Errorf("Backend: Type must be a string such as \"vxlan\": %w", err)
	}
	if typ.Type == nil || strings.TrimSpace(*typ.Type) == "" {
		return raw, DefaultBackend, fmt.Sprintf(noBackendWarning, "Backend has no Type"), nil
	}
	return raw, strings.ToLower(strings.TrimSpace(*typ.Type)), "", nil
}

// unknownKeys warns once for each top-level key that no field of
// wireConfig takes. encoding/json matches names case-insensitively, and so
// does this check.
func unknownKeys(data []byte) []string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return nil
	}
	t := reflect.TypeOf(wireConfig{})
	known := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		known = append(known, t.Field(i).Name)
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if !slices.ContainsFunc(known, func(n string) bool { return strings.EqualFold(n, k) }) {
			out = append(out, fmt.Sprintf("unknown key %q is ignored (known keys: %s)", k, strings.Join(known, ", ")))
		}
	}
	return out
}
