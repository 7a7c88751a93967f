// Package subnetenv reads and writes subnet.env, the contract between
// flanneld (writer) and the flannel CNI plugin (reader).
package subnetenv

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flannelgo/flannel/internal/atomicfile"
)

// Env is the content of subnet.env. Subnet fields hold the gateway address
// with the subnet's length (10.244.1.1/24), as upstream writes them.
type Env struct {
	Network     netip.Prefix
	Subnet      netip.Prefix
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	MTU         int
	IPMasq      bool
	// ExtraNetworks and ExtraIPv6Networks are the networks after the first
	// of a comma-separated FLANNEL_NETWORK / FLANNEL_IPV6_NETWORK, as older
	// flanneld versions with several networks wrote them. Pods get a route
	// to each.
	ExtraNetworks, ExtraIPv6Networks []netip.Prefix
}

// Marshal renders the file in upstream's order.
func (e *Env) Marshal() []byte {
	var b bytes.Buffer
	if e.Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", joinPrefixes(e.Network, e.ExtraNetworks))
	}
	if e.Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", e.Subnet)
	}
	if e.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", joinPrefixes(e.IPv6Network, e.ExtraIPv6Networks))
	}
	if e.IPv6Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s\n", e.IPv6Subnet)
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", e.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%v\n", e.IPMasq)
	return b.Bytes()
}

// Write replaces path atomically (temp file in the same directory, then
// rename), so a reader never sees half a file.
func Write(path string, e *Env) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write subnet file %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, e.Marshal(), 0o644); err != nil {
		return fmt.Errorf("write subnet file: %w", err)
	}
	return nil
}

// Read parses subnet.env. Unknown keys are ignored, as a shell would.
func Read(path string) (*Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	e, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Parse parses subnet.env content. Its errors name the line and the key
// but never quote the content: the CNI plugin passes them to the runtime,
// which logs them, and a subnetFile pointed at a secret (/etc/shadow) must
// not leak it there.
func Parse(data []byte) (*Env, error) {
	e := &Env{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d is not KEY=VALUE (is this a subnet.env file written by flanneld?)", n)
		}
		if err := e.set(k, strings.Trim(v, `"'`)); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !e.Subnet.IsValid() && !e.IPv6Subnet.IsValid() {
		return nil, fmt.Errorf("neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is set")
	}
	return e, nil
}

// set stores one known key; unknown keys are ignored. Its errors say what
// the key needs, not what the value was (see Parse).
func (e *Env) set(k, v string) error {
	var err error
	want := ""
	switch k {
	case "FLANNEL_NETWORK":
		e.Network, e.ExtraNetworks, err = parsePrefixes(v)
		want = "a CIDR list such as 10.244.0.0/16"
	case "FLANNEL_SUBNET":
		e.Subnet, err = netip.ParsePrefix(v)
		want = "a CIDR such as 10.244.1.1/24"
	case "FLANNEL_IPV6_NETWORK":
		e.IPv6Network, e.ExtraIPv6Networks, err = parsePrefixes(v)
		want = "a CIDR list such as fd00:10:244::/56"
	case "FLANNEL_IPV6_SUBNET":
		e.IPv6Subnet, err = netip.ParsePrefix(v)
		want = "a CIDR such as fd00:10:244:1::1/64"
	case "FLANNEL_MTU":
		e.MTU, err = strconv.Atoi(v)
		want = "a number such as 1450"
	case "FLANNEL_IPMASQ":
		e.IPMasq, err = strconv.ParseBool(v)
		want = "true or false"
	}
	if err != nil {
		return fmt.Errorf("the value of %s is not %s", k, want)
	}
	return nil
}

// parsePrefixes reads a comma-separated list of prefixes: the first, and
// the rest (nil when there is only one).
func parsePrefixes(v string) (first netip.Prefix, rest []netip.Prefix, err error) {
	for i, f := range strings.Split(v, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return netip.Prefix{}, nil, err
		}
		if i == 0 {
			first = p
		} else {
			rest = append(rest, p)
		}
	}
	return first, rest, nil
}

func joinPrefixes(first netip.Prefix, rest []netip.Prefix) string {
	parts := []string{first.String()}
	for _, p := range rest {
		parts = append(parts, p.String())
	}
	return strings.Join(parts, ",")
}
