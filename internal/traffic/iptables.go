package traffic

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"k8s.io/klog/v2"
)

// Chain names and comments are upstream flannel's, so operators' scripts
// and searches keep working after the swap.
const (
	masqChain      = "FLANNEL-POSTRTG"
	masqComment    = "flanneld masq"
	forwardChain   = "FLANNEL-FWD"
	forwardComment = "flanneld forward"
)

// iptChain is one chain of ours and the jump into it from a built-in chain.
type iptChain struct {
	table, hook, name, comment string
	wanted                     bool
	rules                      [][]string
}

func (c iptChain) jump() []string {
	return []string{"-m", "comment", "--comment", c.comment, "-j", c.name}
}

// canonical is how iptables -S lists the chain when it holds exactly our
// rules.
func (c iptChain) canonical() []string {
	lines := []string{"-N " + c.name}
	for _, r := range c.rules {
		lines = append(lines, listedRule(c.name, r))
	}
	return lines
}

// listedRule is how iptables -S prints rule spec in chain.
func listedRule(chain string, spec []string) string {
	words := make([]string, len(spec))
	for i, w := range spec {
		if strings.ContainsAny(w, " \t\"") {
			w = fmt.Sprintf("%q", w)
		}
		words[i] = w
	}
	return "-A " + chain + " " + strings.Join(words, " ")
}

// iptFamily is the iptables (or ip6tables) half of an IPTables manager.
type iptFamily struct {
	ipt    *iptables.IPTables
	label  string // "iptables" or "ip6tables"
	chains []iptChain
	// listed is each chain's iptables -S output right after we last wrote
	// or verified it. Comparing with it, rather than only with our own
	// rendering, stays exact even if an iptables version prints rules a
	// little differently, and still notices deleted or reordered rules.
	listed map[string][]string
	// placed holds the chains whose jump this manager has put at the end
	// of its built-in chain since it was made (or since Cleanup).
	placed map[string]bool
}

// NewIPTables returns a Manager that uses iptables and ip6tables. The
// binaries run with -w (wait for the xtables lock).
func NewIPTables(cfg Config) (Manager, error) {
	fams, err := cfg.families()
	if err != nil {
		return nil, err
	}
	m := &manager{kind: "iptables"}
	for _, f := range fams {
		fr, err := newIPTFamily(cfg, f)
		if err != nil {
			return nil, err
		}
		m.families = append(m.families, fr)
	}
	return m, nil
}

func newIPTFamily(cfg Config, f family) (*iptFamily, error) {
	proto, label := iptables.ProtocolIPv4, "iptables"
	if f.v6 {
		proto, label = iptables.ProtocolIPv6, "ip6tables"
	}
	ipt, err := iptables.New(iptables.IPFamily(proto))
	if err != nil {
		return nil, fmt.Errorf("set up %s for %s masquerade/forward rules (is %s installed and are we root?): %w", label, f, label, err)
	}
	fullyRandom := cfg.FullyRandom
	if fullyRandom && !ipt.HasRandomFully() {
		klog.Warningf("%s does not support --random-fully; masquerading without it", label)
		fullyRandom = false
	}
	masq := iptChain{table: "nat", hook: "POSTROUTING", name: masqChain, comment: masqComment, wanted: cfg.Masquerade}
	for _, r := range masqueradeRules(f) {
		masq.rules = append(masq.rules, r.iptablesArgs(masqComment, fullyRandom))
	}
	fwd := iptChain{table: "filter", hook: "FORWARD", name: forwardChain, comment: forwardComment, wanted: cfg.Forward}
	for _, r := range forwardRules(f) {
		fwd.rules = append(fwd.rules, r.iptablesArgs(forwardComment, false))
	}
	return &iptFamily{ipt: ipt, label: label, chains: []iptChain{masq, fwd}, listed: map[string][]string{}, placed: map[string]bool{}}, nil
}

func (f *iptFamily) sync(ctx context.Context) (bool, error) {
	changed := false
	for _, c := range f.chains {
		if err := ctx.Err(); err != nil {
			return changed, err
		}
		var ch bool
		var err error
		if c.wanted {
			ch, err = f.ensure(c)
		} else {
			ch, err = f.remove(c)
		}
		changed = changed || ch
		if err != nil {
			return changed, err
		}
	}
	return changed, nil
}

func (f *iptFamily) cleanup(ctx context.Context) error {
	for _, c := range f.chains {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := f.remove(c); err != nil {
			return err
		}
	}
	return nil
}

// ensure makes chain c hold exactly its rules and be jumped to.
func (f *iptFamily) ensure(c iptChain) (bool, error) {
	rewrote, err := f.ensureRules(c)
	if err != nil {
		return rewrote, err
	}
	moved, err := f.ensureJump(c)
	return rewrote || moved, err
}

// ensureJump appends the jump into c to the end of its built-in chain, as
// upstream does, so that whatever another firewall (KUBE-FORWARD, a policy
// engine's chains, the host's own DROP rules) put there earlier is
// evaluated first and flannel's blanket ACCEPT cannot override it. The
// first time this manager sees the jump (at start-up) it moves an existing
// one to the end, as upstream does at every start; later resyncs only put
// back a jump that was deleted, and leave alone rules appended after it.
func (f *iptFamily) ensureJump(c iptChain) (bool, error) {
	ok, err := f.ipt.Exists(c.table, c.hook, c.jump()...)
	if err != nil {
		return false, fmt.Errorf("check %s jump %s -> %s: %w", f.label, c.hook, c.name, err)
	}
	if ok && f.placed[c.name] {
		return false, nil
	}
	old := 0
	if ok {
		last := false
		if old, last, err = f.jumps(c); err != nil || (last && old == 1) {
			f.placed[c.name] = err == nil
			return false, err
		}
	}
	// Make before break: the new jump is in place before the old ones go,
	// and a delete removes the first (oldest) copy.
	if err := f.ipt.Append(c.table, c.hook, c.jump()...); err != nil {
		return true, fmt.Errorf("add %s jump %s -> %s: %w", f.label, c.hook, c.name, err)
	}
	for range old {
		if err := f.ipt.Delete(c.table, c.hook, c.jump()...); err != nil {
			return true, fmt.Errorf("delete %s jump %s -> %s: %w", f.label, c.hook, c.name, err)
		}
	}
	f.placed[c.name] = true
	return true, nil
}

// jumps counts our jumps in the built-in chain and says whether the last
// rule there is one.
func (f *iptFamily) jumps(c iptChain) (n int, last bool, err error) {
	rules, err := f.ipt.List(c.table, c.hook)
	if err != nil {
		return 0, false, fmt.Errorf("list %s chain %s/%s: %w", f.label, c.table, c.hook, err)
	}
	line := listedRule(c.hook, c.jump())
	for _, r := range rules {
		if r == line {
			n++
		}
	}
	return n, len(rules) > 0 && rules[len(rules)-1] == line, nil
}

// deleteJumps removes every copy of our jump from the built-in chain.
func (f *iptFamily) deleteJumps(c iptChain) error {
	for {
		ok, err := f.ipt.Exists(c.table, c.hook, c.jump()...)
		if err != nil {
			return fmt.Errorf("check %s jump %s -> %s: %w", f.label, c.hook, c.name, err)
		}
		if !ok {
			return nil
		}
		if err := f.ipt.Delete(c.table, c.hook, c.jump()...); err != nil {
			return fmt.Errorf("delete %s jump %s -> %s: %w", f.label, c.hook, c.name, err)
		}
	}
}

func (f *iptFamily) ensureRules(c iptChain) (bool, error) {
	exists, err := f.ipt.ChainExists(c.table, c.name)
	if err != nil {
		return false, fmt.Errorf("look for %s chain %s/%s: %w", f.label, c.table, c.name, err)
	}
	var have []string
	if exists {
		if have, err = f.ipt.List(c.table, c.name); err != nil {
			return false, fmt.Errorf("list %s chain %s/%s: %w", f.label, c.table, c.name, err)
		}
		want, ok := f.listed[c.name]
		if !ok {
			want = c.canonical()
		}
		if slices.Equal(have, want) {
			f.listed[c.name] = have
			return false, nil
		}
	} else if err := f.ipt.NewChain(c.table, c.name); err != nil {
		return true, fmt.Errorf("create %s chain %s/%s: %w", f.label, c.table, c.name, err)
	}
	// Make before break: append the right rules, then drop the old ones
	// from the top, so the chain is never empty while it is rewritten.
	old := 0
	for _, l := range have {
		if strings.HasPrefix(l, "-A ") {
			old++
		}
	}
	for _, r := range c.rules {
		if err := f.ipt.Append(c.table, c.name, r...); err != nil {
			return true, fmt.Errorf("add %s rule to %s/%s (%s): %w", f.label, c.table, c.name, strings.Join(r, " "), err)
		}
	}
	for range old {
		if err := f.ipt.DeleteById(c.table, c.name, 1); err != nil {
			return true, fmt.Errorf("delete stale %s rule from %s/%s: %w", f.label, c.table, c.name, err)
		}
	}
	if have, err = f.ipt.List(c.table, c.name); err != nil {
		return true, fmt.Errorf("list %s chain %s/%s: %w", f.label, c.table, c.name, err)
	}
	f.listed[c.name] = have
	return true, nil
}

// remove deletes chain c and every jump to it; it reports whether anything
// was there.
func (f *iptFamily) remove(c iptChain) (bool, error) {
	delete(f.listed, c.name)
	delete(f.placed, c.name)
	exists, err := f.ipt.ChainExists(c.table, c.name)
	if err != nil {
		return false, fmt.Errorf("look for %s chain %s/%s: %w", f.label, c.table, c.name, err)
	}
	if !exists {
		return false, nil
	}
	if err := f.deleteJumps(c); err != nil {
		return true, err
	}
	if err := f.ipt.ClearAndDeleteChain(c.table, c.name); err != nil {
		return true, fmt.Errorf("delete %s chain %s/%s (is another rule still jumping to it?): %w", f.label, c.table, c.name, err)
	}
	return true, nil
}
