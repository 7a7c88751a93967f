package doctor

import (
	"context"
	"fmt"

	"github.com/flannelgo/flannel/internal/offload"
	"github.com/flannelgo/flannel/internal/traffic"
)

func (f *facts) inspectRules(ctx context.Context, masq, fwd bool) (*traffic.Inspection, error) {
	tc := traffic.Config{Network: f.cfg.Network, Subnet: f.own.Subnet, Masquerade: masq, Forward: fwd}
	return traffic.Inspect(ctx, tc, f.cfg.EnableNFTables)
}

// checkForward: with the FORWARD policy DROP (Docker sets it), pod traffic
// between nodes is dropped unless flannel's accept rules are in place.
func (f *facts) checkForward(ctx context.Context) Result {
	const name = "forward rules"
	if f.cfg == nil || f.own == nil {
		return skip(name, "needs the config and this node's lease (see datastore, subnet.env)")
	}
	in, err := f.inspectRules(ctx, false, true)
	if err != nil {
		return problem(name, "cannot read the firewall rules", "run as root with iptables installed", err.Error())
	}
	ev := append([]string{"iptables FORWARD policy " + in.ForwardPolicy}, in.Missing...)
	if in.ForwardPolicy == "DROP" && len(in.Missing) > 0 {
		return problem(name, fmt.Sprintf("the FORWARD policy is DROP and flannel's accept rules for %s are missing: pods cannot reach other nodes", f.cfg.Network),
			fmt.Sprintf("run flanneld with --iptables-forward-rules=true (the default) and restart it, or accept the pod network yourself: iptables -A FORWARD -s %s -j ACCEPT; iptables -A FORWARD -d %s -j ACCEPT", f.cfg.Network, f.cfg.Network), ev...)
	}
	if len(in.Missing) > 0 {
		return ok(name, "FORWARD policy "+in.ForwardPolicy+" lets pod traffic through (flannel's accept rules are not installed)", ev...)
	}
	return ok(name, "flannel's FORWARD accept rules for "+f.cfg.Network.String()+" are in place", ev...)
}

// checkMasquerade: with --ip-masq (FLANNEL_IPMASQ=true) the masquerade
// rules must be there, or pods cannot reach anything outside the network.
func (f *facts) checkMasquerade(ctx context.Context) Result {
	const name = "masquerade"
	if f.cfg == nil || f.own == nil || f.env == nil {
		return skip(name, "needs the config, subnet.env and this node's lease (see above)")
	}
	if !f.env.IPMasq {
		return ok(name, "FLANNEL_IPMASQ=false: flanneld does not masquerade (something else must)")
	}
	in, err := f.inspectRules(ctx, true, false)
	if err != nil {
		return problem(name, "cannot read the NAT rules", "run as root with iptables/nft installed", err.Error())
	}
	if len(in.Missing) > 0 {
		return problem(name, "flanneld runs with --ip-masq but masquerade rules are missing: pods cannot reach addresses outside "+f.cfg.Network.String(),
			"restart flanneld (it re-installs them; it also restores them every --iptables-resync seconds) and look for whoever flushes the nat table", in.Missing...)
	}
	return ok(name, "masquerade rules for "+f.cfg.Network.String()+" are in place")
}

// checkChecksum: on kernels before 5.7 (or when the config asks for it)
// tx-checksum-ip-generic must be off on the VXLAN device, or packets get
// corrupt checksums behind NAT and some NICs.
func (f *facts) checkChecksum(context.Context) Result {
	const name = "vxlan checksum offload"
	if f.cfg == nil {
		return skip(name, "no network config (see datastore)")
	}
	if f.cfg.BackendType != "vxlan" {
		return ok(name, "not a VXLAN network")
	}
	o, dev := f.vxlan()
	old, rel := offload.KernelNeedsFix()
	if !old && !o.DisableTxChecksumOffload {
		return ok(name, "kernel "+rel+" (5.7 or later) has the checksum fix")
	}
	on, err := offload.TxChecksumOn(dev)
	if err != nil {
		return problem(name, "cannot read the offload features of "+dev, "check that flanneld created "+dev, err.Error())
	}
	why := fmt.Sprintf("kernel %s is older than 5.7", rel)
	if !old {
		why = "Backend.DisableTxChecksumOffload is true"
	}
	if on {
		return problem(name, fmt.Sprintf("%s, but %s is still on for %s: VXLAN packets can leave with corrupt checksums", why, offload.Feature, dev),
			fmt.Sprintf("restart flanneld (it turns it off on such kernels), or: ethtool -K %s %s off", dev, offload.Feature))
	}
	return ok(name, fmt.Sprintf("%s: %s is off on %s", why, offload.Feature, dev))
}
