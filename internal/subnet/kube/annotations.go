package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// DefaultAnnotationPrefix is upstream's --kube-annotation-prefix default.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

// keys are the node annotations under one prefix; the names after the
// prefix are upstream flannel's, so mixed clusters read each other's nodes.
type keys struct {
	backendType, backendData, backendV6Data string
	publicIP, publicIPv6                    string
	subnetManager                           string
	publicIPOverwrite, publicIPv6Overwrite  string
	nodePublicIP, nodePublicIPv6            string
	prefix                                  string // what every key starts with: "<domain>/" or "<domain>/<name>-"
}

// prefixForm is upstream's check of the joined prefix: a lower-case domain
// with at least one dot, a slash, and an optional lower-case name ending in
// a dash. Like upstream's, it is anchored at the end only.
var prefixForm = regexp.MustCompile(`(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$`)

// newKeys joins the prefix to the names as upstream does: a prefix without
// a slash is a domain and gets one ("flannel.alpha.coreos.com" ->
// "flannel.alpha.coreos.com/backend-data"); a prefix with one slash keeps
// its name part and gets a dash ("example.com/flannel" ->
// "example.com/flannel-backend-data"). Beyond upstream's rules, every key
// must be a valid annotation name, so a bad prefix fails at start-up rather
// than at the first patch.
func newKeys(prefix string) (keys, error) {
	bad := func(why string) (keys, error) {
		return keys{}, fmt.Errorf("--kube-annotation-prefix %q %s; use a domain (flannel.alpha.coreos.com) or a domain/name (example.com/flannel)", prefix, why)
	}
	p := prefix
	switch strings.Count(p, "/") {
	case 0:
		p += "/"
	case 1:
	default:
		return bad("holds more than one slash")
	}
	if !strings.HasSuffix(p, "/") && !strings.HasSuffix(p, "-") {
		p += "-"
	}
	if !prefixForm.MatchString(p) {
		return bad("is not a lower-case domain, optionally followed by a slash and a lower-case name")
	}
	k := keys{
		backendType:         p + "backend-type",
		backendData:         p + "backend-data",
		backendV6Data:       p + "backend-v6-data",
		publicIP:            p + "public-ip",
		publicIPv6:          p + "public-ipv6",
		subnetManager:       p + "kube-subnet-manager",
		publicIPOverwrite:   p + "public-ip-overwrite",
		publicIPv6Overwrite: p + "public-ipv6-overwrite",
		nodePublicIP:        p + "node-public-ip",
		nodePublicIPv6:      p + "node-public-ipv6",
		prefix:              p,
	}
	// The longest key decides whether every key is a valid annotation name.
	if errs := validation.IsQualifiedName(k.publicIPv6Overwrite); len(errs) > 0 {
		return bad("does not make valid annotation names: " + strings.Join(errs, "; "))
	}
	return k, nil
}

// storedBackend reads the backend-type, backend-data and backend-v6-data
// annotations; a data annotation that is not JSON is left out.
func (k keys) storedBackend(node *corev1.Node) (typ string, v4, v6 json.RawMessage) {
	data := func(key string) json.RawMessage {
		v, ok := node.Annotations[key]
		if !ok || !json.Valid([]byte(v)) {
			return nil
		}
		return json.RawMessage(v)
	}
	return node.Annotations[k.backendType], data(k.backendData), data(k.backendV6Data)
}

// nodePublic reads the node-public-ip(v6) annotations, which upstream lets
// replace --public-ip(v6) before the interface is chosen. Empty or absent
// annotations give invalid addresses.
func (k keys) nodePublic(node *corev1.Node) (v4, v6 netip.Addr, err error) {
	for _, a := range []struct {
		key  string
		v6   bool
		slot *netip.Addr
	}{{k.nodePublicIP, false, &v4}, {k.nodePublicIPv6, true, &v6}} {
		s := strings.TrimSpace(node.Annotations[a.key])
		if s == "" {
			continue
		}
		ip, perr := netip.ParseAddr(s)
		if perr != nil || ip.Is6() != a.v6 || ip.Is4In6() {
			fam := "IPv4"
			if a.v6 {
				fam = "IPv6"
			}
			return v4, v6, fmt.Errorf("node %q annotation %s=%q is not an %s address: fix or remove it", node.Name, a.key, s, fam)
		}
		*a.slot = ip
	}
	return v4, v6, nil
}

// desired is the annotation set a node publishes for attrs; a nil value
// removes an annotation left over from an earlier configuration (an IPv6
// address after IPv6 was turned off).
func (k keys) desired(attrs lease.Attrs, cfg *config.Config) map[string]*string {
	str := func(s string) *string { return &s }
	data := func(raw json.RawMessage) *string {
		// Upstream writes "null" for backends without data (host-gw).
		if len(bytes.TrimSpace(raw)) == 0 {
			return str("null")
		}
		return str(string(raw))
	}
	out := map[string]*string{
		k.subnetManager: str("true"),
		k.backendType:   str(attrs.BackendType),
		k.backendData:   data(attrs.BackendData),
		k.publicIP:      nil,
		k.publicIPv6:    nil,
		k.backendV6Data: nil,
	}
	if cfg.EnableIPv6 {
		out[k.backendV6Data] = data(attrs.BackendV6Data)
	}
	if attrs.PublicIP.IsValid() {
		out[k.publicIP] = str(attrs.PublicIP.String())
	}
	if attrs.PublicIPv6.IsValid() {
		out[k.publicIPv6] = str(attrs.PublicIPv6.String())
	}
	return out
}

// changes returns the part of want that differs from have: the merge
// patch to send, or nil when the node already says it all.
func changes(have map[string]string, want map[string]*string) map[string]*string {
	out := map[string]*string{}
	for key, v := range want {
		cur, ok := have[key]
		switch {
		case v == nil && ok, v != nil && (!ok || cur != *v):
			out[key] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// overwrite applies the node's public-ip(v6)-overwrite annotations, which
// operators set when the address flanneld detects is not the one peers
// must use (NAT, a second NIC).
func (k keys) overwrite(node *corev1.Node, attrs lease.Attrs) (lease.Attrs, error) {
	for _, o := range []struct {
		key  string
		v6   bool
		slot *netip.Addr
	}{{k.publicIPOverwrite, false, &attrs.PublicIP}, {k.publicIPv6Overwrite, true, &attrs.PublicIPv6}} {
		s, ok := node.Annotations[o.key]
		if !ok || s == "" {
			continue
		}
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || ip.Is6() != o.v6 || ip.Is4In6() {
			fam := "IPv4"
			if o.v6 {
				fam = "IPv6"
			}
			return attrs, fmt.Errorf("node %q annotation %s=%q is not an %s address: fix or remove it", node.Name, o.key, s, fam)
		}
		*o.slot = ip
	}
	return attrs, nil
}

// podCIDRs returns the node's pod CIDRs by family. Spec.PodCIDRs is the
// dual-stack field; Spec.PodCIDR is its first element, kept for old
// clusters.
func podCIDRs(node *corev1.Node) (v4, v6 netip.Prefix, err error) {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		p, perr := netip.ParsePrefix(strings.TrimSpace(c))
		if perr != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %q pod cidr %q: %w", node.Name, c, perr)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			if !v4.IsValid() {
				v4 = p
			}
		} else if !v6.IsValid() {
			v6 = p
		}
	}
	return v4, v6, nil
}

// errNotAssigned means the node has no pod CIDR (yet); the wait for it is
// normal while kube-controller-manager catches up.
var errNotAssigned = errors.New("pod cidr not assigned")

// leaseSubnets picks the node's subnets for the families the network uses
// and checks that they lie inside it. The error names both the pod CIDR and
// the network, so the operator can tell which of the two settings is wrong.
func leaseSubnets(node *corev1.Node, cfg *config.Config) (v4, v6 netip.Prefix, err error) {
	n4, n6, err := podCIDRs(node)
	if err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	if !n4.IsValid() && !n6.IsValid() {
		return netip.Prefix{}, netip.Prefix{}, errNotAssigned
	}
	have := strings.Join(cidrList(node), ",")
	if cfg.EnableIPv4 {
		if !n4.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %q has no IPv4 pod cidr (podCIDRs %s) but net-conf.json enables IPv4 (Network %s): give kube-controller-manager an IPv4 --cluster-cidr, or set EnableIPv4 false", node.Name, have, cfg.Network)
		}
		if !within(n4, cfg.Network) {
			return netip.Prefix{}, netip.Prefix{}, outside(node.Name, n4, cfg.Network, "Network")
		}
		v4 = n4
	}
	if cfg.EnableIPv6 {
		if !n6.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %q has no IPv6 pod cidr (podCIDRs %s) but net-conf.json enables IPv6 (IPv6Network %s): give kube-controller-manager a dual-stack --cluster-cidr=<v4>,<v6>, or set EnableIPv6 false", node.Name, have, cfg.IPv6Network)
		}
		if !within(n6, cfg.IPv6Network) {
			return netip.Prefix{}, netip.Prefix{}, outside(node.Name, n6, cfg.IPv6Network, "IPv6Network")
		}
		v6 = n6
	}
	return v4, v6, nil
}

func cidrList(node *corev1.Node) []string {
	if len(node.Spec.PodCIDRs) > 0 {
		return node.Spec.PodCIDRs
	}
	return []string{node.Spec.PodCIDR}
}

func within(sub, network netip.Prefix) bool {
	return sub.Bits() >= network.Bits() && network.Contains(sub.Addr())
}

func outside(node string, cidr, network netip.Prefix, field string) error {
	return fmt.Errorf("node %q pod cidr %s is outside the flannel network %s (net-conf.json %s): kube-controller-manager's --cluster-cidr and net-conf.json must name the same range", node, cidr, network, field)
}

// nodeLease turns a node into the lease peers route to. ok is false for a
// node that is not (yet) a flannel node: no flannel annotations or no pod
// CIDR. err reports a flannel node whose annotations cannot be used.
func (k keys) nodeLease(node *corev1.Node, cfg *config.Config) (l lease.Lease, ok bool, err error) {
	a := node.Annotations // nil for a bare node: lookups still work
	if a[k.subnetManager] != "true" || a[k.backendType] == "" {
		return lease.Lease{}, false, nil
	}
	v4, v6, err := leaseSubnets(node, cfg)
	if errors.Is(err, errNotAssigned) {
		return lease.Lease{}, false, nil
	}
	if err != nil {
		return lease.Lease{}, false, err
	}
	attrs := lease.Attrs{
		BackendType:   a[k.backendType],
		BackendData:   rawData(a[k.backendData]),
		BackendV6Data: rawData(a[k.backendV6Data]),
	}
	if attrs.PublicIP, err = parseAddr(a, k.publicIP); err != nil {
		return lease.Lease{}, false, err
	}
	if attrs.PublicIPv6, err = parseAddr(a, k.publicIPv6); err != nil {
		return lease.Lease{}, false, err
	}
	if !attrs.PublicIP.IsValid() && !attrs.PublicIPv6.IsValid() {
		return lease.Lease{}, false, fmt.Errorf("neither %s nor %s is set", k.publicIP, k.publicIPv6)
	}
	for _, d := range []struct {
		key string
		raw json.RawMessage
	}{{k.backendData, attrs.BackendData}, {k.backendV6Data, attrs.BackendV6Data}} {
		if d.raw != nil && !json.Valid(d.raw) {
			return lease.Lease{}, false, fmt.Errorf("%s is not JSON: %q", d.key, d.raw)
		}
	}
	return lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs}, true, nil
}

// rawData maps upstream's "null" (and an absent annotation) to no data.
func rawData(s string) json.RawMessage {
	s = strings.TrimSpace(s)
	if s == "" || s == "null" {
		return nil
	}
	return json.RawMessage(s)
}

func parseAddr(a map[string]string, key string) (netip.Addr, error) {
	s := strings.TrimSpace(a[key])
	if s == "" {
		return netip.Addr{}, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s=%q: %w", key, s, err)
	}
	return ip, nil
}

// NodeLease is the lease a node's annotations (under prefix) publish, as
// peers route to it; ok is false for a node that is not a flannel node
// yet. Tools that read a cluster from outside (flannelctl lab check) use it.
func NodeLease(node *corev1.Node, prefix string, cfg *config.Config) (l lease.Lease, ok bool, err error) {
	k, err := newKeys(prefix)
	if err != nil {
		return lease.Lease{}, false, err
	}
	return k.nodeLease(node, cfg)
}
