package traffic

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

// Table and chain names, and the comments nft lists with them, are those of
// upstream's nftables mode: `nft list table ip flannel-ipv4` reads the same
// after the swap, and a table either implementation wrote is one the other
// recognises as correct, so a node switched between them is not rewritten.
const (
	nftTableIPv4           = "flannel-ipv4"
	nftTableIPv6           = "flannel-ipv6"
	nftMasqChain           = "postrtg"
	nftForwardChain        = "forward"
	nftMasqChainComment    = "chain to manage traffic masquerading by flannel"
	nftForwardChainComment = "chain to accept flannel traffic"
)

func nftTableComment(table string) string { return "rules for " + table }

type nftChain struct {
	chain knftables.Chain
	rules []string // as nft lists them
}

// nftFamily is one family's table of an NFTables manager.
type nftFamily struct {
	nft    knftables.Interface
	nftBin string
	family knftables.Family
	table  string
	chains []nftChain // only the wanted ones; none leaves the table empty
	// listed is nft's listing of the table right after we last wrote or
	// verified it. Comparing with it, rather than only with our rendering,
	// stays exact even if an nft version prints a rule a little
	// differently, and still notices any rule deleted, added or changed.
	listed string
}

// NewNFTables returns a Manager that keeps its rules in the nftables tables
// ip flannel-ipv4 and ip6 flannel-ipv6. As upstream, both tables exist;
// the one of a family the network lacks stays empty (which also clears
// rules a dual-stack run left there).
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
	configured := map[bool]bool{}
	for _, f := range fams {
		fr, err := newNFTFamily(cfg, f)
		if err != nil {
			return nil, err
		}
		m.families = append(m.families, fr)
		configured[f.v6] = true
	}
	for _, v6 := range []bool{false, true} {
		if configured[v6] {
			continue
		}
		fr, err := newNFTTable(family{v6: v6})
		if err != nil {
			return nil, err
		}
		m.families = append(m.families, fr)
	}
	return m, nil
}

// newNFTTable is f's table without chains.
func newNFTTable(f family) (*nftFamily, error) {
	nfFamily, table := knftables.IPv4Family, nftTableIPv4
	if f.v6 {
		nfFamily, table = knftables.IPv6Family, nftTableIPv6
	}
	nft, err := knftables.New(nfFamily, table)
	if err != nil {
		return nil, fmt.Errorf("set up nftables for %s masquerade/forward rules (is nft >= 1.0.1 installed and are we root?): %w", f, err)
	}
	bin, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("set up nftables for %s masquerade/forward rules: %w", f, err)
	}
	return &nftFamily{nft: nft, nftBin: bin, family: nfFamily, table: table}, nil
}

func newNFTFamily(cfg Config, f family) (*nftFamily, error) {
	fr, err := newNFTTable(f)
	if err != nil {
		return nil, err
	}
	keyword := "ip"
	if f.v6 {
		keyword = "ip6"
	}
	fullyRandom := cfg.FullyRandom
	if fullyRandom && cfg.Masquerade && !nftFullyRandom(fr.nft) {
		klog.Warningf("nftables: this kernel or nft does not support masquerade fully-random; masquerading without it")
		fullyRandom = false
	}
	if cfg.Masquerade {
		c := nftChain{chain: knftables.Chain{
			Name:     nftMasqChain,
			Comment:  knftables.PtrTo(nftMasqChainComment),
			Type:     knftables.PtrTo(knftables.NATType),
			Hook:     knftables.PtrTo(knftables.PostroutingHook),
			Priority: knftables.PtrTo(knftables.SNATPriority),
		}}
		for _, r := range nftMasqueradeRules(f) {
			c.rules = append(c.rules, r.nftRule(keyword, fullyRandom))
		}
		fr.chains = append(fr.chains, c)
	}
	if cfg.Forward {
		c := nftChain{chain: knftables.Chain{
			Name:     nftForwardChain,
			Comment:  knftables.PtrTo(nftForwardChainComment),
			Type:     knftables.PtrTo(knftables.FilterType),
			Hook:     knftables.PtrTo(knftables.ForwardHook),
			Priority: knftables.PtrTo(knftables.FilterPriority),
		}}
		for _, r := range forwardRules(f) {
			c.rules = append(c.rules, r.nftRule(keyword, false))
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

func (f *nftFamily) sync(ctx context.Context) (bool, error) {
	have, err := f.list(ctx)
	if err != nil {
		return false, err
	}
	want := f.listed
	if want == "" {
		want = f.render()
	}
	if have == want {
		f.listed = have
		return false, nil
	}
	if have != "" {
		klog.V(2).Infof("nftables table %s %s is\n%s\nwant\n%s", f.family, f.table, have, want)
	}
	if err := f.write(ctx); err != nil {
		return true, err
	}
	f.listed, err = f.list(ctx)
	return true, err
}

// write replaces the table with ours in one transaction, so no packet
// sees it half written.
func (f *nftFamily) write(ctx context.Context) error {
	tx := f.nft.NewTransaction()
	f.dropTable(tx)
	tx.Add(&knftables.Table{Comment: knftables.PtrTo(nftTableComment(f.table))})
	for _, c := range f.chains {
		tx.Add(&c.chain)
		for _, r := range c.rules {
			tx.Add(&knftables.Rule{Chain: c.chain.Name, Rule: r})
		}
	}
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("write nftables table %s %s: %w", f.family, f.table, err)
	}
	return nil
}

// render is the table as `nft list table` prints it when it holds exactly
// our chains and rules.
func (f *nftFamily) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n\tcomment %q\n", f.family, f.table, nftTableComment(f.table))
	for i, c := range f.chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n\t\tcomment %q\n\t\ttype %s hook %s priority %s; policy accept;\n",
			c.chain.Name, *c.chain.Comment, *c.chain.Type, *c.chain.Hook, *c.chain.Priority)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// list returns `nft list table` of our table, or "" when it does not
// exist. knftables cannot list rule text, so nft is run directly, in the
// network namespace of the calling thread as knftables runs it.
func (f *nftFamily) list(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, f.nftBin, "list", "table", string(f.family), f.table)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && strings.Contains(stderr.String(), "No such file or directory") {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("list nftables table %s %s: %w: %s", f.family, f.table, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// dropTable deletes the table whether or not it exists: add is a no-op on
// an existing table, and both run in the caller's single transaction.
func (f *nftFamily) dropTable(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
}

func (f *nftFamily) cleanup(ctx context.Context) error {
	f.listed = ""
	tx := f.nft.NewTransaction()
	f.dropTable(tx)
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("delete nftables table %s %s: %w", f.family, f.table, err)
	}
	return nil
}
