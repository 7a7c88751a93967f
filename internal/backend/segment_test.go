package backend_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/backend"
	bt "github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

func TestCheckOnSegment(t *testing.T) {
	tn := bt.NewNet(t, "tbk-seg")
	seg1 := tn.Segment("br1", 1500, "198.51.100.1/24", "fd00:198:51:100::1/64")
	n := tn.Node("n", seg1, "198.51.100.11/24", "fd00:198:51:100::11/64")
	// A more specific route through the router inside the connected
	// prefix, and a device route without any address of ours behind it.
	bt.Run(t, "ip", "-n", n.NS, "route", "add", "198.51.100.128/25", "via", "198.51.100.1", "dev", "eth0")
	bt.Run(t, "ip", "-n", n.NS, "route", "del", "203.0.113.0/24")
	bt.Run(t, "ip", "-n", n.NS, "route", "add", "203.0.113.0/24", "dev", "eth0")
	for addr, want := range map[string]string{
		"198.51.100.12":        "",
		"fd00:198:51:100::12":  "",
		"198.51.100.200":       "through gateway 198.51.100.1",
		"203.0.113.13":         "outside every prefix configured on eth0 (198.51.100.11/24",
		"10.244.3.1":           "no route",
		"fd00:10:244:3::1":     "no route",
		"::ffff:198.51.100.12": "",
	} {
		err := backend.CheckOnSegment(n.H, n.Ext.Iface.Index, netip.MustParseAddr(addr))
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v, want on segment", addr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: error %v, want one containing %q", addr, err, want)
		}
	}
}
