package cniplugin

import (
	"fmt"
	"maps"
	"net/netip"

	"github.com/flannelgo/flannel/internal/subnetenv"
)

// Bridge is the delegate used when the configuration names none, and the
// bridge device it creates, as in upstream flannel.
const (
	DefaultDelegateType = "bridge"
	DefaultBridgeName   = "cni0"
	DefaultIPAMType     = "host-local"
)

// DelegateConf renders the configuration handed to the delegate plugin from
// the flannel netconf and the node's subnet.env. It is pure: n is not
// modified.
//
// Keys set in the "delegate" map win over the defaults derived from
// subnet.env; "name" and "ipam" are flannel's to set, as upstream insists,
// so a conflist that sets them there is refused rather than half-honoured.
// IPAM options go in the top-level "ipam" map instead.
func DelegateConf(n *NetConf, env *subnetenv.Env) (map[string]any, error) {
	if err := checkDelegate(n.Delegate); err != nil {
		return nil, err
	}
	if err := checkEnv(env); err != nil {
		return nil, err
	}
	d := maps.Clone(n.Delegate)
	if d == nil {
		d = map[string]any{}
	}
	d["name"] = n.Name
	if n.CNIVersion != "" {
		d["cniVersion"] = n.CNIVersion
	}
	if _, ok := d["type"]; !ok {
		d["type"] = DefaultDelegateType
	}
	setDefault(d, "mtu", env.MTU)
	// The delegate masquerades only when flanneld does not, whatever its
	// type (bridge, ptp, ...), as upstream sets it.
	setDefault(d, "ipMasq", !env.IPMasq)
	if d["type"] == DefaultDelegateType {
		setDefault(d, "bridge", DefaultBridgeName)
		setDefault(d, "isGateway", true)
	}
	ipam, err := delegateIPAM(n.IPAM, env)
	if err != nil {
		return nil, err
	}
	d["ipam"] = ipam
	if n.RuntimeConfig != nil {
		d["runtimeConfig"] = n.RuntimeConfig
	}
	return d, nil
}

// DelegateType returns the plugin type a rendered delegate config names.
func DelegateType(conf map[string]any) (string, error) {
	t, ok := conf["type"].(string)
	if !ok || t == "" {
		return "", fmt.Errorf("delegate config has no (string) 'type' field")
	}
	return t, nil
}

func checkDelegate(d map[string]any) error {
	if t, ok := d["type"]; ok {
		if s, isStr := t.(string); !isStr || s == "" {
			return fmt.Errorf("'delegate' dictionary, if present, must have (string) 'type' field, got %v", t)
		}
	}
	if _, ok := d["name"]; ok {
		return fmt.Errorf("'delegate' dictionary must not have 'name' field, it'll be set by flannel")
	}
	if _, ok := d["ipam"]; ok {
		return fmt.Errorf("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel (put IPAM options in the top-level 'ipam' field)")
	}
	return nil
}

func checkEnv(env *subnetenv.Env) error { return env.Validate() }

// delegateIPAM builds host-local IPAM for the node's subnet(s). subnet.env
// holds the gateway with the prefix length (10.244.1.1/24); host-local
// wants the network, and then picks .1 as gateway by itself.
func delegateIPAM(base map[string]any, env *subnetenv.Env) (map[string]any, error) {
	ipam := maps.Clone(base)
	if ipam == nil {
		ipam = map[string]any{}
	}
	setDefault(ipam, "type", DefaultIPAMType)

	var routes []any
	if r, ok := ipam["routes"]; ok && r != nil {
		list, isList := r.([]any)
		if !isList {
			return nil, fmt.Errorf("'ipam.routes' must be a list, got %T", r)
		}
		routes = append(routes, list...)
	}
	var ranges []any
	if env.Subnet.IsValid() {
		ranges = append(ranges, []any{map[string]any{"subnet": env.Subnet.Masked().String()}})
		for _, nw := range append([]netip.Prefix{env.Network}, env.ExtraNetworks...) {
			routes = append(routes, map[string]any{"dst": nw.Masked().String()})
		}
	}
	if env.IPv6Subnet.IsValid() {
		ranges = append(ranges, []any{map[string]any{"subnet": env.IPv6Subnet.Masked().String()}})
		for _, nw := range append([]netip.Prefix{env.IPv6Network}, env.ExtraIPv6Networks...) {
			routes = append(routes, map[string]any{"dst": nw.Masked().String()})
		}
	}
	ipam["ranges"] = ranges
	ipam["routes"] = routes
	return ipam, nil
}

func setDefault(m map[string]any, key string, v any) {
	if _, ok := m[key]; !ok {
		m[key] = v
	}
}
