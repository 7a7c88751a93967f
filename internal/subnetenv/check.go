package subnetenv

import (
	"fmt"
	"net/netip"
)

// Check reports the first inconsistency in e that would give pods wrong
// addresses or routes: a subnet outside its network, mixed address
// families, an MTU no interface can have. Errors name both values and the
// keys they come from, since the operator has to find which one is wrong.
func (e *Env) Check() error {
	if err := checkPair("FLANNEL_NETWORK", e.Network, "FLANNEL_SUBNET", e.Subnet, false); err != nil {
		return err
	}
	if err := checkPair("FLANNEL_IPV6_NETWORK", e.IPv6Network, "FLANNEL_IPV6_SUBNET", e.IPv6Subnet, true); err != nil {
		return err
	}
	if e.MTU != 0 && (e.MTU < minMTU || e.MTU > maxMTU) {
		return fmt.Errorf("FLANNEL_MTU=%d is outside %d..%d", e.MTU, minMTU, maxMTU)
	}
	return nil
}

// Validate is everything the flannel CNI plugin demands of the file before
// it sets up a pod (flannelctl doctor asks the same): a subnet with its
// network, a positive MTU, and Check.
func (e *Env) Validate() error {
	if !e.Subnet.IsValid() && !e.IPv6Subnet.IsValid() {
		return fmt.Errorf("neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is set")
	}
	if e.Subnet.IsValid() && !e.Network.IsValid() {
		return fmt.Errorf("FLANNEL_SUBNET is set but FLANNEL_NETWORK is missing")
	}
	if e.IPv6Subnet.IsValid() && !e.IPv6Network.IsValid() {
		return fmt.Errorf("FLANNEL_IPV6_SUBNET is set but FLANNEL_IPV6_NETWORK is missing")
	}
	if e.MTU <= 0 {
		return fmt.Errorf("FLANNEL_MTU is missing or not positive (%d)", e.MTU)
	}
	// A pod must never get an address outside the network the other nodes
	// route to it (a subnet.env left from another network config).
	return e.Check()
}

// minMTU is IPv4's minimum (RFC 791); maxMTU the largest an IP packet can be.
const minMTU, maxMTU = 68, 65535

func checkPair(netKey string, network netip.Prefix, subKey string, subnet netip.Prefix, v6 bool) error {
	family := "an IPv4"
	if v6 {
		family = "an IPv6"
	}
	for _, kv := range []struct {
		key string
		p   netip.Prefix
	}{{netKey, network}, {subKey, subnet}} {
		if kv.p.IsValid() && (kv.p.Addr().Is6() != v6 || kv.p.Addr().Is4In6()) {
			return fmt.Errorf("%s=%s is not %s prefix", kv.key, kv.p, family)
		}
	}
	if !subnet.IsValid() {
		return nil
	}
	if !network.IsValid() {
		return fmt.Errorf("%s=%s is set but %s is missing", subKey, subnet, netKey)
	}
	if subnet.Bits() < network.Bits() || !network.Contains(subnet.Addr()) {
		return fmt.Errorf("%s=%s is not inside %s=%s: flanneld wrote one of them for another network; restart flanneld to rewrite the file",
			subKey, subnet, netKey, network)
	}
	return nil
}
