package daemon

import (
	"context"
	"net/netip"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/iface"
)

// publicIPStore is a subnet manager that keeps an operator-set public
// address for the node (Kubernetes: the node-public-ip and
// node-public-ipv6 annotations).
type publicIPStore interface {
	StoredPublicIP(ctx context.Context) (v4, v6 netip.Addr, err error)
}

// applyStoredPublicIP lets the datastore's public addresses replace
// --public-ip and --public-ipv6 before the interface is chosen, as upstream
// does. A malformed stored address is an error the operator must fix.
func (d *Daemon) applyStoredPublicIP(ctx context.Context, opts *iface.Options) error {
	s, ok := d.mgr.(publicIPStore)
	if !ok {
		return nil
	}
	v4, v6, err := s.StoredPublicIP(ctx)
	if err != nil {
		return err
	}
	if v4.IsValid() {
		klog.Infof("public address %s from %s replaces --public-ip %v", v4, d.mgr.Name(), opts.PublicIP)
		opts.PublicIP = v4
	}
	if v6.IsValid() {
		klog.Infof("public IPv6 address %s from %s replaces --public-ipv6 %v", v6, d.mgr.Name(), opts.PublicIPv6)
		opts.PublicIPv6 = v6
	}
	return nil
}
