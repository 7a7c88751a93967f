package traffic

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// Starting in one mode removes the rules the other mode left (a switch of
// EnableNFTables), as upstream does, and leaves the mode in use alone.
func TestRemoveOtherMode(t *testing.T) {
	requireRoot(t)
	guardRootNamespace(t)
	ns := newNS(t, "ttr-switch")
	applyIn(t, ns, newManagerIn(t, ns, iptablesImpl, dualConfig()))
	applyIn(t, ns, newManagerIn(t, ns, nftablesImpl, dualConfig()))
	iptState := "iptables -t nat -S; iptables -t filter -S; ip6tables -t nat -S; ip6tables -t filter -S"

	// Now in nftables mode: the iptables chains and jumps go.
	if err := ns.do(func() error { return RemoveOtherMode(context.Background(), true) }); err != nil {
		t.Fatalf("RemoveOtherMode(nftables): %v", err)
	}
	if got := ns.sh(t, iptState); strings.Contains(got, "FLANNEL") || strings.Contains(got, "flanneld") {
		t.Errorf("iptables rules left after switching to nftables:\n%s", got)
	}
	checkDump(t, ns, nftablesImpl, false, "nftables rules after removing the iptables ones")
	checkDump(t, ns, nftablesImpl, true, "nftables rules after removing the iptables ones")

	// Back in iptables mode: the nftables tables go.
	applyIn(t, ns, newManagerIn(t, ns, iptablesImpl, dualConfig()))
	if err := ns.do(func() error { return RemoveOtherMode(context.Background(), false) }); err != nil {
		t.Fatalf("RemoveOtherMode(iptables): %v", err)
	}
	if got := ns.sh(t, "nft list tables"); strings.Contains(got, nftTableIPv4) || strings.Contains(got, nftTableIPv6) {
		t.Errorf("nftables tables left after switching to iptables:\n%s", got)
	}
	checkDump(t, ns, iptablesImpl, false, "iptables rules after removing the nftables ones")
	checkDump(t, ns, iptablesImpl, true, "iptables rules after removing the nftables ones")

	// Nothing of the other mode there: nothing to do, no error.
	if err := ns.do(func() error { return RemoveOtherMode(context.Background(), false) }); err != nil {
		t.Errorf("RemoveOtherMode with nothing to remove: %v", err)
	}
}

// In nftables mode, as in iptables mode, fully-random is used only where
// it loads: an nft that refuses it gets plain masquerade rather than a
// failed start. The nft here is a wrapper that refuses any ruleset
// mentioning fully-random.
func TestNFTablesProbesFullyRandom(t *testing.T) {
	requireRoot(t)
	guardRootNamespace(t)
	real, err := exec.LookPath("nft")
	if err != nil {
		tbtest.Unavailable(t, "nft not installed: %v", err)
	}
	dir := t.TempDir()
	wrapper := "#!/bin/sh\nin=$(cat)\ncase \"$in\" in *fully-random*) echo 'Error: fully-random not supported' >&2; exit 1;; esac\n" +
		"printf '%s\\n' \"$in\" | exec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "nft"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	ns := newNS(t, "ttr-frand")
	m := newManagerIn(t, ns, nftablesImpl, fullConfig())
	applyIn(t, ns, m)
	got := nftablesImpl.dump(t, ns, false)
	want := strings.ReplaceAll(wantNFTablesV4, " fully-random", "")
	if got != want {
		t.Errorf("rules with an nft lacking fully-random:\n%s\nwant:\n%s", got, want)
	}
}
