package netpol

import "fmt"

// The log prefixes of the drop-log chains: internal/droplog reads the
// direction from them.
const (
	LogPrefixIngress = "flannel-netpol-in"
	LogPrefixEgress  = "flannel-netpol-eg"
)

// DropLog asks the class chains to log a sample of what they drop to an
// NFLOG group before counting and dropping it. Group 0 is off.
type DropLog struct {
	Group uint16
	// Rate is the most packets per second each direction logs (the burst
	// is the same number): nftables' limit runs in the kernel, so a flood
	// costs flanneld at most this many records per second, while the
	// per-pod counters still count every packet.
	Rate int
}

func logChain(d Direction) string { return "log-" + dirPrefix(d) }

// addLogChains adds one chain per direction holding the only limit rule,
// so the rate is shared by all the direction's classes and the cost is
// bounded however many classes there are.
func (r *ruleset) addLogChains(l DropLog) {
	if l.Group == 0 {
		return
	}
	rate := max(l.Rate, 1)
	for d, prefix := range map[Direction]string{Ingress: LogPrefixIngress, Egress: LogPrefixEgress} {
		r.chains[logChain(d)] = []string{fmt.Sprintf(`limit rate %d/second burst %d packets log prefix "%s" group %d`, rate, rate, prefix, l.Group)}
	}
}

// logJump is the class chain's rule before its counters: a jump to the
// direction's log chain, which returns.
func (r *ruleset) logJump(d Direction) []string {
	if _, ok := r.chains[logChain(d)]; !ok {
		return nil
	}
	return []string{"jump " + logChain(d)}
}

// SetDropLog turns the drop log on (Group > 0) or off from the next Sync.
func (t *Table) SetDropLog(l DropLog) {
	t.log = l
	t.have = nil // rewrite every class chain with or without the jump
}
