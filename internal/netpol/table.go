package netpol

import (
	"context"
	"fmt"
	"strings"

	"sigs.k8s.io/knftables"
)

// Table writes models into the kernel's flannel-netpol table. Each Sync is
// one nftables transaction: the old rule set stays in force, whole, until
// the new one replaces it, whole.
type Table struct {
	nft knftables.Interface
	// have is what the last Sync left in the table; nil until the first
	// Sync has listed what an earlier flanneld left.
	have *objects
}

// NewTable connects to nftables (the nft binary must be installed).
func NewTable() (*Table, error) {
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables for network policy (is the nft binary installed and the kernel built with nf_tables?): %w", err)
	}
	return &Table{nft: nft}, nil
}

// Sync replaces the table's content with m's rules in one transaction.
func (t *Table) Sync(ctx context.Context, m *Model) error {
	if t.have == nil {
		have, err := t.list(ctx)
		if err != nil {
			return err
		}
		t.have = &have
	}
	tx, want := t.transaction(m, *t.have)
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("load network policy rules into nftables table inet %s (%d operations): %w", TableName, tx.NumOperations(), err)
	}
	t.have = &want
	return nil
}

// list reads the names an earlier run left; none when there is no table.
func (t *Table) list(ctx context.Context) (objects, error) {
	have := newObjects()
	all, err := t.nft.ListAll(ctx)
	if knftables.IsNotFound(err) {
		return have, nil
	}
	if err != nil {
		return have, fmt.Errorf("list nftables table inet %s: %w", TableName, err)
	}
	for kind, names := range all {
		for _, n := range names {
			switch kind {
			case "chain":
				have.chains[n] = true
			case "set":
				have.sets[n] = true
			case "counter":
				have.counters[n] = true
			}
		}
	}
	return have, nil
}

// transaction builds the whole rule set for m. Everything that exists is
// flushed first, what m no longer needs is deleted, then all is refilled.
func (t *Table) transaction(m *Model, have objects) (*knftables.Transaction, objects) {
	tx := t.nft.NewTransaction()
	want := newObjects()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("flanneld: Kubernetes NetworkPolicy")})
	fwd := &knftables.Chain{
		Name: forwardChain, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(knftables.FilterPriority),
	}
	tx.Add(fwd)
	tx.Flush(fwd)
	want.chains[forwardChain] = true
	for _, mp := range baseMaps {
		tx.Add(&mp)
		tx.Flush(&mp)
	}
	for name := range have.chains {
		if name != forwardChain {
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	classes := layout(m)
	for d, cs := range classes {
		for i, c := range cs {
			classChain(tx, Direction(d), i, c, want)
		}
	}
	podElements(tx, classes, want)
	for _, r := range forwardRules {
		tx.Add(&knftables.Rule{Chain: forwardChain, Rule: r})
	}
	deleteStale(tx, have, want)
	return tx, want
}

// podElements maps each pod to its class chain and its drop counter.
func podElements(tx *knftables.Transaction, classes [2][]*class, want objects) {
	for d, cs := range classes {
		dir := Direction(d)
		base := "ingress"
		if dir == Egress {
			base = "egress"
		}
		for i, c := range cs {
			for _, r := range c.pods {
				cnt := counterName(dir, r.Pod)
				if !want.counters[cnt] {
					tx.Add(&knftables.Counter{Name: cnt})
					want.counters[cnt] = true
				}
				fam := familySuffix(r.Pod.IP.Is6())
				ip := r.Pod.IP.String()
				tx.Add(&knftables.Element{Map: base + fam, Key: []string{ip},
					Value: []string{fmt.Sprintf("jump %s-%d", dirPrefix(dir), i)}})
				tx.Add(&knftables.Element{Map: "cnt-" + dirPrefix(dir) + fam, Key: []string{ip},
					Value: []string{`"` + cnt + `"`}})
			}
		}
	}
}

// deleteStale removes what the previous rule set had and this one has
// not; they are unreferenced by now, the chains and maps having been
// flushed earlier in the same transaction.
func deleteStale(tx *knftables.Transaction, have, want objects) {
	for name := range have.sets {
		if !want.sets[name] {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	for name := range have.chains {
		if !want.chains[name] {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for name := range have.counters {
		if !want.counters[name] {
			tx.Delete(&knftables.Counter{Name: name})
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
