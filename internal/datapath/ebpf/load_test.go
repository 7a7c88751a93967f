package ebpf

import (
	"testing"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// The committed object passes this kernel's verifier and its kfunc and
// CO-RE references (conntrack) resolve.
func TestProgramsLoad(t *testing.T) {
	tbtest.NeedRoot(t)
	o, err := loadObjects()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if n, err := o.counters(); err != nil || len(n) != len(statNames) {
		t.Errorf("counters: %v, %v; want %d zeros", n, err, len(statNames))
	}
}
