// Package lease is the vocabulary shared by subnet managers, backends and the
// daemon: who owns which subnet, and how to reach it.
package lease

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Attrs is what a node publishes about itself. Its JSON form is the value
// stored under <prefix>/subnets/<key> in etcd, byte-compatible with upstream
// flannel, so field names must not change.
type Attrs struct {
	PublicIP      netip.Addr
	PublicIPv6    netip.Addr
	BackendType   string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

// wireAttrs mirrors upstream's encoding: PublicIP is always present (0.0.0.0
// on IPv6-only nodes), the rest only when set.
type wireAttrs struct {
	PublicIP      string          `json:"PublicIP"`
	PublicIPv6    *string         `json:"PublicIPv6,omitempty"`
	BackendType   string          `json:"BackendType,omitempty"`
	BackendData   json.RawMessage `json:"BackendData,omitempty"`
	BackendV6Data json.RawMessage `json:"BackendV6Data,omitempty"`
}

// MarshalJSON encodes attrs the way upstream flanneld does.
func (a Attrs) MarshalJSON() ([]byte, error) {
	w := wireAttrs{PublicIP: "0.0.0.0", BackendType: a.BackendType, BackendData: a.BackendData, BackendV6Data: a.BackendV6Data}
	if a.PublicIP.IsValid() {
		w.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		w.PublicIPv6 = &s
	}
	return json.Marshal(w)
}

// UnmarshalJSON accepts upstream's encoding, including a null PublicIPv6.
func (a *Attrs) UnmarshalJSON(b []byte) error {
	var w wireAttrs
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*a = Attrs{BackendType: w.BackendType, BackendData: w.BackendData, BackendV6Data: w.BackendV6Data}
	if w.PublicIP != "" && w.PublicIP != "0.0.0.0" {
		ip, err := netip.ParseAddr(w.PublicIP)
		if err != nil {
			return fmt.Errorf("PublicIP %q: %w", w.PublicIP, err)
		}
		a.PublicIP = ip
	}
	if w.PublicIPv6 != nil && *w.PublicIPv6 != "" {
		ip, err := netip.ParseAddr(*w.PublicIPv6)
		if err != nil {
			return fmt.Errorf("PublicIPv6 %q: %w", *w.PublicIPv6, err)
		}
		a.PublicIPv6 = ip
	}
	return nil
}

// Lease is one node's claim on a subnet (and, in dual stack, an IPv6 subnet).
type Lease struct {
	Subnet     netip.Prefix // invalid when the network is IPv6-only
	IPv6Subnet netip.Prefix // invalid when the network has no IPv6
	Attrs      Attrs
	Expiration time.Time
	// Revision is the datastore revision the lease was read at; opaque to
	// everyone but the subnet manager that produced it.
	Revision int64
}

// Key is the lease's identity: the subnet key used in etcd.
func (l *Lease) Key() string { return MakeKey(l.Subnet, l.IPv6Subnet) }

// String names the lease in logs.
func (l *Lease) String() string {
	s := l.Key()
	if l.Attrs.PublicIP.IsValid() {
		s += " (" + l.Attrs.PublicIP.String() + ")"
	} else if l.Attrs.PublicIPv6.IsValid() {
		s += " (" + l.Attrs.PublicIPv6.String() + ")"
	}
	return s
}

// MakeKey encodes subnets as upstream's etcd key suffix:
// "10.244.1.0-24", "10.244.1.0-24&fd00:10:244:1::-64" or "fd00:10:244:1::-64".
func MakeKey(v4, v6 netip.Prefix) string {
	enc := func(p netip.Prefix) string { return p.Addr().String() + "-" + strconv.Itoa(p.Bits()) }
	switch {
	case v4.IsValid() && v6.IsValid():
		return enc(v4) + "&" + enc(v6)
	case v6.IsValid():
		return enc(v6)
	default:
		return enc(v4)
	}
}

// ParseKey is the inverse of MakeKey. It refuses keys whose address is not
// the network address of its prefix, since upstream never writes those.
func ParseKey(key string) (v4, v6 netip.Prefix, err error) {
	for _, part := range strings.Split(key, "&") {
		p, perr := parseKeyPart(part)
		if perr != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: %w", key, perr)
		}
		if p.Addr().Is4() {
			if v4.IsValid() {
				return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: two IPv4 subnets", key)
			}
			v4 = p
		} else {
			if v6.IsValid() {
				return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: two IPv6 subnets", key)
			}
			v6 = p
		}
	}
	return v4, v6, nil
}

func parseKeyPart(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("missing '-<length>' in %q", s)
	}
	addr, err := netip.ParseAddr(s[:i])
	if err != nil {
		return netip.Prefix{}, err
	}
	bits, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prefix length in %q: %w", s, err)
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr() != addr {
		return netip.Prefix{}, fmt.Errorf("%s is not a network address", s)
	}
	return p, nil
}

// EventType says whether a lease appeared (or changed) or went away.
type EventType int

const (
	// Added covers a new lease and a changed one (same key, new attributes).
	Added EventType = iota
	// Removed means the lease was deleted or expired.
	Removed
)

func (t EventType) String() string {
	if t == Removed {
		return "removed"
	}
	return "added"
}

// Event is one change to the set of leases. What it carries depends on
// the side of the daemon it is on:
//   - from a subnet manager (subnet.Manager.WatchLeases), an Added event
//     carries the whole lease and a Removed event the lease's subnets,
//     with or without its attributes (etcd has no value left to give);
//   - to a backend (backend.Network.HandleEvents, fed by the daemon's lease
//     set, internal/leaseset), every event carries the subnets and the
//     attributes: a Removed event those of the lease as the backend was
//     last given it, whichever datastore it came from.
type Event struct {
	Type  EventType
	Lease Lease
}
