package vxlan

import (
	"encoding/json"
	"testing"

	"github.com/flannelgo/flannel/internal/backend"
	bt "github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
)

// After a reboot (flannel.1 gone, the Node's backend-data annotation
// kept) the device is created with the MAC published last time, as
// upstream does, so the peers' FDB entries for this node stay valid; a
// surviving device keeps its own MAC, and an unusable stored MAC is
// ignored.
func TestResumeRestoresMAC(t *testing.T) {
	a, b := twoNodes(t, "res")
	_, la := up(t, a, `{}`, "10.244.1.0/24")
	nwB, _ := up(t, b, `{}`, "10.244.2.0/24")
	nwB.HandleEvents(ctx, added(la))
	mac := mustMAC(t, la.Attrs.BackendData)
	peerFDB := mac + " dst 198.51.100.11 dev flannel.1 permanent"
	assertLine(t, fdbLines(t, b.NS, "flannel.1"), peerFDB)

	reboot := func(stored json.RawMessage) string {
		t.Helper()
		run(t, "ip", "-n", a.NS, "link", "del", "flannel.1")
		be, err := NewWithHandle(a.H, &a.NSH, a.Ext, json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		be.Resume(stored, nil)
		_, l := upWith(t, a, be)
		return mustMAC(t, l.Attrs.BackendData)
	}
	if got := reboot(la.Attrs.BackendData); got != mac {
		t.Fatalf("after a reboot flannel.1 has MAC %s, want %s from the stored backend-data", got, mac)
	}
	assertLine(t, fdbLines(t, b.NS, "flannel.1"), peerFDB)

	if got := reboot(json.RawMessage(`{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}`)); got == "ff:ff:ff:ff:ff:ff" {
		t.Errorf("a broadcast VtepMAC was put on flannel.1")
	}

	// A device that survived keeps its MAC whatever was stored.
	_, l := up(t, a, `{}`, "10.244.1.0/24")
	kept := mustMAC(t, l.Attrs.BackendData)
	be, err := NewWithHandle(a.H, &a.NSH, a.Ext, json.RawMessage(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	be.Resume(la.Attrs.BackendData, nil)
	if _, l2 := upWith(t, a, be); mustMAC(t, l2.Attrs.BackendData) != kept {
		t.Errorf("a surviving flannel.1 changed its MAC %s to %s", kept, mustMAC(t, l2.Attrs.BackendData))
	}
}

// upWith registers and activates be on n for 10.244.1.0/24, IPv4 only.
func upWith(t *testing.T, n *bt.Node, be *Backend) (backend.Network, lease.Lease) {
	t.Helper()
	return bt.Up(t, n, be, bt.BackendConfig(TypeName, true, false), "10.244.1.0/24", "")
}
