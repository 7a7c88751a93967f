package netpol

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// With the drop log on, each class chain jumps to its direction's log
// chain (one limit per direction) before counting and dropping; turning it
// off takes the chains and jumps away.
func TestTableDropLog(t *testing.T) {
	w := newWorld()
	w.policy("x", "deny", np{PodSelector: *sel(), PolicyTypes: both})
	inNetns(t, func() error {
		ctx := context.Background()
		tbl, err := NewTable()
		if err != nil {
			return err
		}
		tbl.SetDropLog(DropLog{Group: 9, Rate: 50})
		if err := tbl.Sync(ctx, Compile(w.in, nil)); err != nil {
			return err
		}
		got := nftList(t)
		for _, want := range []string{
			`chain log-in {`, `limit rate 50/second burst 50 packets log prefix "flannel-netpol-in" group 9`,
			`log prefix "flannel-netpol-eg" group 9`, "jump log-in", "jump log-eg",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("table lacks %q:\n%s", want, got)
			}
		}
		tbl.SetDropLog(DropLog{})
		if err := tbl.Sync(ctx, Compile(w.in, nil)); err != nil {
			return fmt.Errorf("sync without the drop log: %w", err)
		}
		if got := nftList(t); strings.Contains(got, "log-") {
			t.Errorf("drop log off, the table still logs:\n%s", got)
		}
		_, err = tbl.Remove(ctx)
		return err
	})
}
