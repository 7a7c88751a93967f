package traffic

import (
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

// Table and chain names of the nftables mode. The tables are ours alone,
// so Apply can rewrite and Cleanup can delete them whole.
const (
	nftTableIPv4     = "flannel-ipv4"
	nftTableIPv6     = "flannel-ipv6"
	nftMasqChain     = "postrouting"
	nftForwardChain  = "forward"
	nftCommentPrefix = "flanneld: "
)

type nftChain struct {
	chain knftables.Chain
	rules []knftables.Rule
}

// nftFamily is one family's table of an NFTables manager.
type nftFamily struct {
	nft    knftables.Interface
	table  string
	chains []nftChain // only the wanted ones; none means "no table"
}

// NewNFTables returns a Manager that keeps its rules in the nftables tables
// ip flannel-ipv4 and ip6 flannel-ipv6.
//
// nftables evaluates every table's base chains: an accept in our forward
// chain does not overrule a drop in another table (for example Docker's
// iptables-nft FORWARD policy). Use the iptables mode where that matters.
func NewNFTables(cfg Config) (Manager, error) {
	fams, err := cfg.families()
	if err != nil {
		return nil, err
	}
	m := &manager{kind: "nftables"}
	for _, f := range fams {
		fr, err := newNFTFamily(cfg, f)
		if err != nil {
			return nil, err
		}
		m.families = append(m.families, fr)
	}
	return m, nil
}

func newNFTFamily(cfg Config, f family) (*nftFamily, error) {
	nfFamily, table, keyword := knftables.IPv4Family, nftTableIPv4, "ip"
	if f.v6 {
		nfFamily, table, keyword = knftables.IPv6Family, nftTableIPv6, "ip6"
	}
	nft, err := knftables.New(nfFamily, table)
	if err != nil {
		return nil, fmt.Errorf("set up nftables for %s masquerade/forward rules (is nft >= 1.0.1 installed and are we root?): %w", f, err)
	}
	fr := &nftFamily{nft: nft, table: table}
	fullyRandom := cfg.FullyRandom
	if fullyRandom && cfg.Masquerade && !nftFullyRandom(nft) {
		klog.Warningf("nftables: this kernel or nft does not support masquerade fully-random; masquerading without it")
		fullyRandom = false
	}
	if cfg.Masquerade {
		c := nftChain{chain: knftables.Chain{
			Name:     nftMasqChain,
			Type:     knftables.PtrTo(knftables.NATType),
			Hook:     knftables.PtrTo(knftables.PostroutingHook),
			Priority: knftables.PtrTo(knftables.SNATPriority),
		}}
		for _, r := range masqueradeRules(f) {
			c.rules = append(c.rules, nftRuleFor(nftMasqChain, r, keyword, fullyRandom))
		}
		fr.chains = append(fr.chains, c)
	}
	if cfg.Forward {
		c := nftChain{chain: knftables.Chain{
			Name:     nftForwardChain,
			Type:     knftables.PtrTo(knftables.FilterType),
			Hook:     knftables.PtrTo(knftables.ForwardHook),
			Priority: knftables.PtrTo(knftables.FilterPriority),
		}}
		for _, r := range forwardRules(f) {
			c.rules = append(c.rules, nftRuleFor(nftForwardChain, r, keyword, false))
		}
		fr.chains = append(fr.chains, c)
	}
	return fr, nil
}

// nftFullyRandom asks nft, in a dry run (nft --check), whether a
// masquerade fully-random rule would load, as upstream probes it; the
// iptables mode asks iptables the same (HasRandomFully).
func nftFullyRandom(nft knftables.Interface) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const probe = "fully-random-probe"
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{
		Name:     probe,
		Type:     knftables.PtrTo(knftables.NATType),
		Hook:     knftables.PtrTo(knftables.PostroutingHook),
		Priority: knftables.PtrTo(knftables.SNATPriority),
	})
	tx.Add(&knftables.Rule{Chain: probe, Rule: "masquerade fully-random"})
	if err := nft.Check(ctx, tx); err != nil {
		klog.V(1).Infof("nftables fully-random probe: %v", err)
		return false
	}
	return true
}

func nftRuleFor(chain string, r rule, keyword string, fullyRandom bool) knftables.Rule {
	return knftables.Rule{
		Chain:   chain,
		Rule:    r.nftRule(keyword, fullyRandom),
		Comment: knftables.PtrTo(nftCommentPrefix + r.purpose),
	}
}

func (f *nftFamily) sync(ctx context.Context) (bool, error) {
	ok, err := f.inSync(ctx)
	if err != nil {
		return false, err
	}
	if ok {
		return false, nil
	}
	tx := f.nft.NewTransaction()
	f.dropTable(tx)
	if len(f.chains) > 0 {
		tx.Add(&knftables.Table{Comment: knftables.PtrTo("flanneld masquerade and forward rules")})
		for _, c := range f.chains {
			tx.Add(&c.chain)
			for _, r := range c.rules {
				tx.Add(&r)
			}
		}
	}
	if err := f.nft.Run(ctx, tx); err != nil {
		return true, fmt.Errorf("write nftables table %s: %w", f.table, err)
	}
	return true, nil
}

// dropTable deletes the table whether or not it exists: add is a no-op on
// an existing table, and both run in the caller's single transaction.
func (f *nftFamily) dropTable(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
}

func (f *nftFamily) cleanup(ctx context.Context) error {
	tx := f.nft.NewTransaction()
	f.dropTable(tx)
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", f.table, err)
	}
	return nil
}

// inSync says whether the table holds exactly our chains with our rules in
// order. Rules are recognised by their comments, which nft keeps with the
// rule: a rule replaced or re-added by hand loses or changes its comment.
func (f *nftFamily) inSync(ctx context.Context) (bool, error) {
	chains, err := f.nft.List(ctx, "chains")
	if knftables.IsNotFound(err) {
		return len(f.chains) == 0, nil
	}
	if err != nil {
		return false, fmt.Errorf("list nftables table %s: %w", f.table, err)
	}
	if len(f.chains) == 0 {
		return false, nil // the table is there but should not be
	}
	want := make([]string, 0, len(f.chains))
	for _, c := range f.chains {
		want = append(want, c.chain.Name)
	}
	slices.Sort(chains)
	slices.Sort(want)
	if !slices.Equal(chains, want) {
		klog.V(2).Infof("nftables table %s has chains %v, want %v", f.table, chains, want)
		return false, nil
	}
	rules, err := f.nft.ListRules(ctx, "")
	if knftables.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("list nftables rules of %s: %w", f.table, err)
	}
	have := map[string][]string{}
	for _, r := range rules {
		comment := ""
		if r.Comment != nil {
			comment = *r.Comment
		}
		have[r.Chain] = append(have[r.Chain], comment)
	}
	for _, c := range f.chains {
		var wantComments []string
		for _, r := range c.rules {
			wantComments = append(wantComments, *r.Comment)
		}
		if !slices.Equal(have[c.chain.Name], wantComments) {
			klog.V(2).Infof("nftables chain %s/%s has rules %q, want %q", f.table, c.chain.Name, have[c.chain.Name], wantComments)
			return false, nil
		}
	}
	return true, nil
}
