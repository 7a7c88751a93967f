package traffic

import (
	"context"
	"strings"
	"testing"
)

// Inspect reads what is there without changing it: nothing missing after
// Apply, the masquerade rules missing after someone flushes them, and the
// FORWARD policy as set.
func TestInspect(t *testing.T) {
	inEachImpl(t, func(t *testing.T, ns *testNS, im impl) {
		m := newManagerIn(t, ns, im, fullConfig())
		applyIn(t, ns, m)
		nft := im.name == "nftables"
		inspect := func() *Inspection {
			t.Helper()
			var in *Inspection
			if err := ns.do(func() (err error) { in, err = Inspect(context.Background(), fullConfig(), nft); return err }); err != nil {
				t.Fatal(err)
			}
			return in
		}
		if in := inspect(); len(in.Missing) != 0 || in.ForwardPolicy != "ACCEPT" {
			t.Fatalf("after Apply: %+v, want nothing missing and policy ACCEPT", in)
		}
		flush := "iptables -t nat -F " + masqChain
		if nft {
			flush = "nft flush chain ip " + nftTableIPv4 + " " + nftMasqChain
		}
		ns.sh(t, flush+"; iptables -P FORWARD DROP")
		in := inspect()
		if len(in.Missing) != len(masqueradeRules(family{})) || in.ForwardPolicy != "DROP" {
			t.Errorf("after flushing the masquerade rules: %d missing %q, policy %s; want the %d masquerade rules and DROP",
				len(in.Missing), in.Missing, in.ForwardPolicy, len(masqueradeRules(family{})))
		}
		for _, miss := range in.Missing {
			if strings.Contains(miss, "forward") {
				t.Errorf("a forward rule reported missing: %s", miss)
			}
		}
		if after := im.dump(t, ns, false); after == im.want(false) {
			t.Error("Inspect restored the rules; it must only read")
		}
	})
}
