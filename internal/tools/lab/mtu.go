package lab

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"text/tabwriter"
)

// ipICMPOverhead is what an IPv4 ping adds to its payload: IP header (20)
// and ICMP header (8). A payload of MTU-28 fills the MTU exactly.
const ipICMPOverhead = 28

// mtuResult is the MTU boundary of one pod pair.
type mtuResult struct {
	pair
	podMTU, flannelMTU int
	// largest is the largest DF payload that passed; promised is what
	// FLANNEL_MTU promises (FLANNEL_MTU-28); sendable is what the pod's
	// own MTU lets it send (pod MTU-28).
	largest, promised, sendable int
	verdict, why                string
	ok                          bool
}

// mtuBoundaries finds, for every pod pair that answered pings, the largest
// DF ping payload that passes, and judges it.
func (c *checker) mtuBoundaries(ctx context.Context, conn map[pair]bool) {
	var pairs []pair
	for _, s := range c.pods {
		for _, d := range c.pods {
			if s != d && conn[pair{s, d}] {
				pairs = append(pairs, pair{s, d})
			}
		}
	}
	res := make([]*mtuResult, len(pairs))
	parallelDo(len(pairs), func(i int) { res[i] = c.boundary(ctx, pairs[i]) })

	fmt.Fprintf(c.out, "\nMTU boundary per pod pair (largest DF ping payload that arrives; FLANNEL_MTU promises FLANNEL_MTU-%d):\n", ipICMPOverhead)
	if len(res) == 0 {
		fmt.Fprintln(c.out, "  (no connected pod pairs)")
		return
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  PAIR\tPOD MTU\tFLANNEL_MTU\tPROMISED\tLARGEST\tRESULT")
	for _, r := range res {
		fmt.Fprintf(w, "  %s\t%d\t%d\t%d\t%d\t%s\n", r.pair, r.podMTU, r.flannelMTU, r.promised, r.largest, r.verdict)
		if r.ok {
			c.pass()
		} else {
			c.fail("MTU "+r.pair.String(), r.why)
		}
	}
	_ = w.Flush()
}

func (c *checker) boundary(ctx context.Context, p pair) *mtuResult {
	r := &mtuResult{pair: p, podMTU: c.mtus[p.src.Name]}
	if env := c.envs[p.src.Node.Name]; env != nil {
		r.flannelMTU = env.MTU
	}
	r.promised = r.flannelMTU - ipICMPOverhead
	r.sendable = r.podMTU - ipICMPOverhead
	r.largest = largestPayload(ctx, p.src.NS, p, r.sendable, r.promised)
	r.ok, r.verdict, r.why = judge(r, p.src.Node != p.dst.Node)
	return r
}

// largestPayload finds the largest DF payload from src to dst, between
// the 56 bytes that connectivity proved and what the pod can send. The
// likely answers come first (everything; what FLANNEL_MTU promises; the
// path MTU an ICMP "fragmentation needed" reported), so a healthy pair
// costs one probe and a known MTU mismatch three; bisection does the rest.
func largestPayload(ctx context.Context, ns string, p pair, sendable, promised int) int {
	lo, hi := min(56, sendable), sendable+1 // lo passes, hi fails
	try := func(size int) (hint int) {
		ok, hint := mtuProbe(ctx, ns, p.dst.IP, size)
		if ok {
			lo = size
		} else {
			hi = size
		}
		return hint
	}
	hints := []int{sendable, promised}
	for len(hints) > 0 && hi-lo > 1 {
		size := hints[0]
		hints = hints[1:]
		if size <= lo || size >= hi {
			continue
		}
		if h := try(size); h > 0 {
			hints = append(hints, h-ipICMPOverhead)
		}
		if size == lo {
			hints = append(hints, size+1) // confirm the edge at once
		}
	}
	for hi-lo > 1 {
		try((lo + hi) / 2)
	}
	return lo
}

// pmtuRE finds the MTU ping reports for an oversized packet, either from
// an ICMP "Frag needed" or from the path MTU the kernel already learned.
var pmtuRE = regexp.MustCompile(`mtu\s*=\s*(\d+)`)

// mtuProbe sends one DF ping of size payload bytes. A failure that names
// the path MTU is certain; a silent one is tried again, since one lost
// packet must not move the boundary.
func mtuProbe(ctx context.Context, ns string, dst netip.Addr, size int) (bool, int) {
	for range 2 {
		out, err := pingOut(ctx, ns, dst, size, true)
		if err == nil {
			return true, 0
		}
		if m := pmtuRE.FindSubmatch(out); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			return false, n
		}
	}
	return false, 0
}

// judge compares the boundary with what the pod may send and what
// FLANNEL_MTU promises; it returns a short verdict for the table and the
// reason for the failure list.
func judge(r *mtuResult, crossNode bool) (ok bool, short, why string) {
	overMTU := crossNode && r.podMTU > r.flannelMTU
	switch {
	case r.largest >= r.sendable && !overMTU:
		if crossNode && r.podMTU < r.flannelMTU {
			return true, fmt.Sprintf("ok (pod MTU %d < FLANNEL_MTU %d)", r.podMTU, r.flannelMTU), ""
		}
		return true, "ok", ""
	case overMTU:
		return false, fmt.Sprintf("FAIL: pod MTU %d > overlay MTU %d", r.podMTU, r.flannelMTU),
			fmt.Sprintf("payloads above %d bytes vanish: the pod MTU (%d) exceeds the overlay MTU (%d, FLANNEL_MTU); pods must use FLANNEL_MTU (drop --pod-mtu, or the delegate \"mtu\" of the CNI conflist)",
				r.largest, r.podMTU, r.flannelMTU)
	case crossNode:
		return false, fmt.Sprintf("FAIL: path carries %d < promised %d", r.largest, r.promised),
			fmt.Sprintf("payloads above %d bytes vanish although FLANNEL_MTU %d promises %d: something on the path (underlay, router or overlay device) has a smaller MTU than flanneld assumed",
				r.largest, r.flannelMTU, r.promised)
	default:
		return false, fmt.Sprintf("FAIL: %d < pod MTU-28 %d", r.largest, r.sendable),
			fmt.Sprintf("payloads above %d bytes vanish between pods on the same bridge, whose MTU is %d", r.largest, r.podMTU)
	}
}
