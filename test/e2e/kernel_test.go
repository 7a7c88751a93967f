package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// vxlanPeer is what a node's kernel holds for one remote VXLAN lease.
type vxlanPeer struct {
	route bool // <subnet> via <subnet addr> dev flannel.1 onlink
	neigh bool // <subnet addr> lladdr <mac> PERMANENT on flannel.1
	fdb   bool // <mac> dst <publicIP> on flannel.1
}

func (p vxlanPeer) any() bool { return p.route || p.neigh || p.fdb }
func (p vxlanPeer) all() bool { return p.route && p.neigh && p.fdb }

func (p vxlanPeer) String() string {
	return fmt.Sprintf("route=%v neighbour=%v fdb=%v", p.route, p.neigh, p.fdb)
}

// vxlanState reads what node ns has programmed for the peer holding subnet
// and advertising publicIP, through the one kernel-state inspector.
func vxlanState(ns, dev string, subnet netip.Prefix, publicIP netip.Addr) (vxlanPeer, error) {
	var st vxlanPeer
	err := kernelstate.With(ns, func(r *kernelstate.Reader) error {
		p, err := r.VXLANPeer(dev, subnet, publicIP)
		if err != nil {
			return err
		}
		st = vxlanPeer{route: p.RouteOK(), neigh: p.NeighOK(nil), fdb: p.FDBOK(nil)}
		return nil
	})
	return st, err
}

// requireProgrammed fails unless every node holds route, neighbour and FDB
// entry for the peer with subnet at publicIP.
func requireProgrammed(t *testing.T, nodes []*testbed.Node, subnet netip.Prefix, publicIP netip.Addr) {
	t.Helper()
	for _, n := range nodes {
		// A peer's lease reaches the others through the watch a moment
		// after its own subnet.env is written.
		eventually(t, 5*time.Second, "node "+n.Name+" programs "+subnet.String(), func() error {
			st, err := vxlanState(n.NS, "flannel.1", subnet, publicIP)
			if err != nil || !st.all() {
				return fmt.Errorf("%s %v, want all three", st, err)
			}
			return nil
		})
	}
}

// requireUnprogrammed waits until no node holds anything for the peer with
// subnet at publicIP, within the 5 s the contract allows.
func requireUnprogrammed(t *testing.T, nodes []*testbed.Node, subnet netip.Prefix, publicIP netip.Addr) {
	t.Helper()
	for _, n := range nodes {
		took := eventually(t, 5*time.Second, "node "+n.Name+" drops "+subnet.String(), func() error {
			st, err := vxlanState(n.NS, "flannel.1", subnet, publicIP)
			if err != nil {
				return err
			}
			if st.any() {
				return fmt.Errorf("still has %s", st)
			}
			return nil
		})
		t.Logf("node %s removed route, neighbour and FDB for %s after %s", n.Name, subnet, took.Round(time.Millisecond))
	}
}
