package netpol

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// Table writes models into the kernel's flannel-netpol table. Each Sync is
// one nftables transaction: the old rule set stays in force, whole, until
// the new one replaces it, whole. After the first Sync only what changed
// is rewritten.
type Table struct {
	nft knftables.Interface
	// have is what the table holds after the last successful Sync; nil
	// when unknown (first Sync, or after a failed one): then the table is
	// listed and everything in it is rewritten.
	have *ruleset
	log  DropLog // the drop log's NFLOG group and rate (droplog.go)
}

// NewTable connects to nftables (the nft binary must be installed).
func NewTable() (*Table, error) {
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables for network policy (is the nft binary installed and the kernel built with nf_tables?): %w", err)
	}
	return &Table{nft: nft}, nil
}

// Sync makes the table's content m's rules, in one transaction.
func (t *Table) Sync(ctx context.Context, m *Model) error {
	want := buildRuleset(m, t.log)
	var tx *knftables.Transaction
	if t.have == nil {
		names, err := t.list(ctx)
		if err != nil {
			return err
		}
		tx = t.rewrite(names, want)
	} else {
		tx = t.update(t.have, want)
	}
	t.have = nil
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("load network policy rules into nftables table inet %s (%d operations): %w", TableName, tx.NumOperations(), err)
	}
	t.have = want
	return nil
}

// list reads the names an earlier run left (chains, sets, counters); an
// empty ruleset when there is no table.
func (t *Table) list(ctx context.Context) (*ruleset, error) {
	have := newRuleset()
	all, err := t.nft.ListAll(ctx)
	if knftables.IsNotFound(err) {
		return have, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list nftables table inet %s: %w", TableName, err)
	}
	for kind, names := range all {
		for _, n := range names {
			switch kind {
			case "chain":
				if n != forwardChain {
					have.chains[n] = nil
				}
			case "set":
				have.sets[n] = &setSpec{}
			case "counter":
				have.counters[n] = true
			}
		}
	}
	return have, nil
}

func (t *Table) base(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("flanneld: Kubernetes NetworkPolicy")})
	tx.Add(&knftables.Chain{
		Name: forwardChain, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(knftables.FilterPriority),
	})
	for _, mp := range baseMaps {
		tx.Add(&mp)
	}
}

// rewrite replaces whatever the table holds (names only known) with want.
func (t *Table) rewrite(have, want *ruleset) *knftables.Transaction {
	tx := t.nft.NewTransaction()
	t.base(tx)
	fwd := &knftables.Chain{Name: forwardChain}
	tx.Flush(fwd)
	for _, mp := range baseMaps {
		tx.Flush(&knftables.Map{Name: mp.Name})
	}
	for name := range have.chains {
		tx.Flush(&knftables.Chain{Name: name})
	}
	deleteStale(tx, have, want)
	for name := range have.sets {
		if want.sets[name] != nil {
			tx.Flush(&knftables.Set{Name: name})
		}
	}
	fill(tx, newRuleset(), want)
	for _, r := range forwardRules {
		tx.Add(&knftables.Rule{Chain: forwardChain, Rule: r})
	}
	return tx
}

// update turns have into want, touching only what differs.
func (t *Table) update(have, want *ruleset) *knftables.Transaction {
	tx := t.nft.NewTransaction()
	t.base(tx)
	for name, elems := range have.maps {
		for k, v := range elems {
			if want.maps[name][k] != v {
				tx.Delete(&knftables.Element{Map: name, Key: []string{k}})
			}
		}
	}
	for name, rules := range have.chains {
		if !slices.Equal(rules, want.chains[name]) {
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	deleteStale(tx, have, want)
	fill(tx, have, want)
	return tx
}

// deleteStale removes what have has and want has not; the chains and map
// elements referring to them are gone earlier in the same transaction.
func deleteStale(tx *knftables.Transaction, have, want *ruleset) {
	for name := range have.chains {
		if _, ok := want.chains[name]; !ok {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for name := range have.sets {
		if want.sets[name] == nil {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	for name := range have.counters {
		if !want.counters[name] {
			tx.Delete(&knftables.Counter{Name: name})
		}
	}
}

// fill adds to a table holding have (minus what was flushed or deleted)
// what want has more: counters, sets and their elements, chains and their
// rules, then map elements.
func fill(tx *knftables.Transaction, have, want *ruleset) {
	for name := range want.counters {
		if !have.counters[name] {
			tx.Add(&knftables.Counter{Name: name})
		}
	}
	for name, s := range want.sets {
		old := have.sets[name]
		if old == nil || old.typ != s.typ {
			tx.Add(&knftables.Set{Name: name, Type: s.typ, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
			old = &setSpec{}
		}
		for k, parts := range old.elems {
			if s.elems[k] == nil {
				tx.Delete(&knftables.Element{Set: name, Key: parts})
			}
		}
		for k, parts := range s.elems {
			if old.elems[k] == nil {
				tx.Add(&knftables.Element{Set: name, Key: parts})
			}
		}
	}
	var changed []string
	for name, rules := range want.chains {
		if old, ok := have.chains[name]; ok && slices.Equal(old, rules) {
			continue
		}
		changed = append(changed, name)
		tx.Add(&knftables.Chain{Name: name})
	}
	// Rules after every chain exists: a class chain jumps to a log chain,
	// and a ClusterNetworkPolicy class chain to a second chain (cnp_nft.go).
	for _, name := range changed {
		for _, r := range want.chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	for name, elems := range want.maps {
		for k, v := range elems {
			if have.maps[name][k] != v {
				tx.Add(&knftables.Element{Map: name, Key: []string{k}, Value: []string{v}})
			}
		}
	}
}

// Remove deletes the table, if there is one: with --network-policy off
// nothing of an earlier run may keep isolating pods.
func (t *Table) Remove(ctx context.Context) (bool, error) {
	tx := t.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	err := t.nft.Run(ctx, tx)
	if knftables.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete nftables table inet %s: %w", TableName, err)
	}
	t.have = nil
	return true, nil
}

// Drops is a pod's count of dropped packets in one direction.
type Drops struct {
	Direction Direction
	Namespace string
	Pod       string
	Packets   uint64
}

// Drops reads the per-pod drop counters.
func (t *Table) Drops(ctx context.Context) ([]Drops, error) {
	cs, err := t.nft.ListCounters(ctx)
	if knftables.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list counters of nftables table inet %s: %w", TableName, err)
	}
	var out []Drops
	for _, c := range cs {
		d, ns, pod, ok := ParseCounterName(strings.TrimSpace(c.Name))
		if !ok || c.Packets == nil {
			continue
		}
		out = append(out, Drops{Direction: d, Namespace: ns, Pod: pod, Packets: *c.Packets})
	}
	return out, nil
}
