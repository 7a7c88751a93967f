package antispoof

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// With the drop log on, the spoofed chain logs a rate-limited sample to
// the group before counting and dropping; the kernel accepts the rule in
// the bridge family.
func TestTableDropLog(t *testing.T) {
	tbtest.NeedRoot(t, "nft", "ip")
	ns := tbtest.NS(t, "fl-asunit-droplog")
	var listing []byte
	err := testbed.InNamespace(ns, func() error {
		tbl, err := NewTable()
		if err != nil {
			return err
		}
		tbl.SetDropLog(9, 50)
		noPorts := func() (map[string]bool, error) { return nil, nil }
		if err := tbl.Sync(context.Background(), nil, noPorts); err != nil {
			return err
		}
		listing, err = exec.Command("nft", "list", "chain", "bridge", TableName, spoofChain).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, listing)
	}
	want := `limit rate 50/second burst 50 packets log prefix "flannel-antispoof" group 9`
	if !strings.Contains(string(listing), want) {
		t.Errorf("spoofed chain lacks %q:\n%s", want, listing)
	}
}
