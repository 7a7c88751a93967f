package traffic

import (
	"context"
	"errors"
	"fmt"

	"github.com/coreos/go-iptables/iptables"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

// RemoveOtherMode removes the masquerade and forward rules flanneld keeps
// in the mode it is not using now, as upstream does on start: after a
// switch from iptables to nftables (or back) the old mode's rules would
// otherwise stay and keep masquerading with an old network's addresses. A
// mode whose tool is not installed has nothing to remove.
func RemoveOtherMode(ctx context.Context, usingNFTables bool) error {
	if usingNFTables {
		return removeIPTablesRules(ctx)
	}
	return removeNFTablesRules(ctx)
}

// removeIPTablesRules deletes FLANNEL-POSTRTG and FLANNEL-FWD, and the
// jumps into them, from iptables and ip6tables.
func removeIPTablesRules(ctx context.Context) error {
	var errs []error
	for _, p := range []struct {
		proto iptables.Protocol
		label string
	}{{iptables.ProtocolIPv4, "iptables"}, {iptables.ProtocolIPv6, "ip6tables"}} {
		ipt, err := iptables.New(iptables.IPFamily(p.proto))
		if err != nil {
			klog.V(1).Infof("%s not usable (%v): no %s rules to remove", p.label, err, p.label)
			continue
		}
		f := &iptFamily{ipt: ipt, label: p.label, listed: map[string][]string{}, chains: []iptChain{
			{table: "nat", hook: "POSTROUTING", name: masqChain, comment: masqComment},
			{table: "filter", hook: "FORWARD", name: forwardChain, comment: forwardComment},
		}}
		for _, c := range f.chains {
			removed, err := f.remove(c)
			if err != nil {
				errs = append(errs, err)
			} else if removed {
				klog.Infof("removed %s chain %s/%s left from iptables mode (now nftables)", p.label, c.table, c.name)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// removeNFTablesRules deletes the tables ip flannel-ipv4 and ip6
// flannel-ipv6, upstream's and ours alike.
func removeNFTablesRules(ctx context.Context) error {
	var errs []error
	for _, t := range []struct {
		family knftables.Family
		table  string
	}{{knftables.IPv4Family, nftTableIPv4}, {knftables.IPv6Family, nftTableIPv6}} {
		nft, err := knftables.New(t.family, t.table)
		if err != nil {
			klog.V(1).Infof("nftables not usable (%v): no table %s to remove", err, t.table)
			continue
		}
		if _, err := nft.List(ctx, "chains"); knftables.IsNotFound(err) {
			continue
		}
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete nftables table %s %s left from nftables mode: %w", t.family, t.table, err))
			continue
		}
		klog.Infof("removed nftables table %s %s left from nftables mode (now iptables)", t.family, t.table)
	}
	return errors.Join(errs...)
}
