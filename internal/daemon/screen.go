package daemon

import (
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
)

// reportSameAddress logs, once per lease, another node that advertises this
// node's public address: the VXLAN FDB (or host-gw route) for one of the two
// subnets then leads to the wrong machine.
func reportSameAddress(ev lease.Event, own *lease.Lease, reported map[string]bool) {
	key := ev.Lease.Key()
	if ev.Type == lease.Removed {
		delete(reported, key)
		return
	}
	a, b := ev.Lease.Attrs, own.Attrs
	same := (b.PublicIP.IsValid() && !b.PublicIP.IsUnspecified() && a.PublicIP == b.PublicIP) ||
		(b.PublicIPv6.IsValid() && a.PublicIPv6 == b.PublicIPv6)
	if !same || reported[key] {
		return
	}
	reported[key] = true
	klog.Errorf("duplicate public address: lease %s (another node) advertises the same address as this node's lease %s (%s): "+
		"one of them will not receive its traffic; give each node its own address with --iface, --iface-regex, --iface-can-reach or --public-ip",
		key, own.Key(), b.PublicIP)
}

// screen reports other nodes advertising this node's address, then lets
// through only the leases the guard accepts, logging each refusal once.
func (d *Daemon) screen(others []lease.Event, own *lease.Lease, twins map[string]bool) []lease.Event {
	for _, ev := range others {
		reportSameAddress(ev, own, twins)
	}
	if d.guard == nil {
		return others
	}
	out, refused, err := d.guard.Filter(others)
	if err != nil {
		klog.Warningf("read this node's addresses and routes to screen leases: %v (checking leases without them)", err)
	}
	for _, r := range refused {
		d.metrics.LeasesRejected.WithLabelValues(r.Reason).Inc()
		klog.Errorf("%s; it is not programmed (fix or delete the key in the datastore)", r)
	}
	return out
}
