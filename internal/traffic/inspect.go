package traffic

import (
	"context"
	"fmt"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Inspection is a read-only look at the rules of this namespace, judged
// against the plan a flanneld with cfg would install (for `flannelctl
// doctor`; nothing is changed).
type Inspection struct {
	// ForwardPolicy is the iptables filter FORWARD policy (ACCEPT, DROP);
	// DROP is what Docker sets, and then pods on other nodes are cut off
	// unless flannel's forward accepts are in place.
	ForwardPolicy string
	// Missing lists the planned rules that are not there, each as
	// "<where>: <rule>".
	Missing []string
}

// Inspect reads the IPv4 rules that cfg asks for (Masquerade, Forward), in
// iptables or (nft) nftables mode.
func Inspect(ctx context.Context, cfg Config, nft bool) (*Inspection, error) {
	f, err := newFamily(false, cfg.Network, cfg.Subnet)
	if err != nil {
		return nil, err
	}
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4))
	if err != nil {
		return nil, fmt.Errorf("iptables (installed? root?): %w", err)
	}
	in := &Inspection{}
	if in.ForwardPolicy, err = forwardPolicy(ipt); err != nil {
		return nil, err
	}
	if nft {
		err = in.nftMissing(ctx, cfg, f)
	} else {
		err = in.iptMissing(ipt, cfg, f)
	}
	return in, err
}

func forwardPolicy(ipt *iptables.IPTables) (string, error) {
	lines, err := ipt.List("filter", "FORWARD")
	if err != nil {
		return "", fmt.Errorf("list iptables FORWARD: %w", err)
	}
	for _, l := range lines {
		if w := strings.Fields(l); len(w) == 3 && w[0] == "-P" {
			return w[2], nil
		}
	}
	return "", nil
}

func (in *Inspection) iptMissing(ipt *iptables.IPTables, cfg Config, f family) error {
	type plan struct {
		want                       bool
		table, hook, chain, commnt string
		rules                      []rule
	}
	for _, p := range []plan{
		{cfg.Masquerade, "nat", "POSTROUTING", masqChain, masqComment, masqueradeRules(f)},
		{cfg.Forward, "filter", "FORWARD", forwardChain, forwardComment, forwardRules(f)},
	} {
		if !p.want {
			continue
		}
		c := iptChain{name: p.chain, comment: p.commnt}
		if ok, err := ipt.Exists(p.table, p.hook, c.jump()...); err != nil || !ok {
			in.Missing = append(in.Missing, fmt.Sprintf("iptables -t %s %s: jump to %s (%v)", p.table, p.hook, p.chain, err))
			continue
		}
		for _, r := range p.rules {
			ok, err := ipt.Exists(p.table, p.chain, r.iptablesArgs(p.commnt, false)...)
			if !ok && r.verdict == verdictMasquerade {
				ok, err = ipt.Exists(p.table, p.chain, r.iptablesArgs(p.commnt, true)...)
			}
			if err != nil || !ok {
				in.Missing = append(in.Missing, fmt.Sprintf("iptables -t %s %s: %s", p.table, p.chain, strings.Join(r.iptablesArgs(p.commnt, false), " ")))
			}
		}
	}
	return nil
}

// nftMissing looks for each planned rule among the lines nft lists for its
// chain (the rules carry no comment to find them by, as upstream's).
func (in *Inspection) nftMissing(ctx context.Context, cfg Config, f family) error {
	fr, err := newNFTTable(f)
	if err != nil {
		return fmt.Errorf("nftables (nft installed? root?): %w", err)
	}
	listing, err := fr.list(ctx)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, l := range strings.Split(listing, "\n") {
		have[strings.TrimSpace(l)] = true
	}
	type plan struct {
		want  bool
		chain string
		rules []rule
	}
	for _, p := range []plan{{cfg.Masquerade, nftMasqChain, nftMasqueradeRules(f)}, {cfg.Forward, nftForwardChain, forwardRules(f)}} {
		if !p.want {
			continue
		}
		for _, r := range p.rules {
			if !have[r.nftRule("ip", false)] && !have[r.nftRule("ip", true)] {
				in.Missing = append(in.Missing, fmt.Sprintf("nft table ip %s chain %s: %s", nftTableIPv4, p.chain, r.nftRule("ip", false)))
			}
		}
	}
	return nil
}
