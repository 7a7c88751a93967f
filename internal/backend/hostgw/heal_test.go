package hostgw

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/backend"
	bt "github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// A peer's route deleted by hand is back within 1 s; after the external
// interface goes down and up (which flushes the routes through it), every
// route is back within 2 s of the interface (and its IPv6 address) coming
// back, and pods talk again. The periodic reconcile is
// an hour away: the repairs come from netlink notifications.
func TestHealRoutes(t *testing.T) {
	h := bt.NewHealPair(t, "tbk-hg-heal", TypeName, true, func(n *bt.Node) (backend.Backend, error) {
		return NewWithHandle(n.H, n.Ext, json.RawMessage(`{}`))
	})
	a, pa, pb, rep := h.A, h.PA, h.PB, h.Rep

	present := func() error {
		for _, c := range [][3]string{
			{"-4", "10.244.2.0/24", "10.244.2.0/24 via 198.51.100.12 dev eth0"},
			{"-6", "fd00:10:244:2::/64", "fd00:10:244:2::/64 via fd00:198:51:100::12 dev eth0"},
		} {
			if got := routes(t, a, c[0], c[1]); !strings.Contains(got, c[2]) {
				return fmt.Errorf("route for %s is %q, want %q", c[1], got, c[2])
			}
		}
		return nil
	}
	bt.Run(t, "ip", "-n", a.NS, "route", "del", "10.244.2.0/24")
	took := bt.WaitFor(t, time.Second, "IPv4 route restored", present)
	t.Logf("IPv4 route restored %s after deletion", took)
	bt.Run(t, "ip", "-6", "-n", a.NS, "route", "del", "fd00:10:244:2::/64")
	took = bt.WaitFor(t, time.Second, "IPv6 route restored", present)
	t.Logf("IPv6 route restored %s after deletion", took)
	// The healer counts a repair after the reconcile that made it returns:
	// the route can be back a moment before its count.
	bt.WaitFor(t, time.Second, "2 route repairs counted", func() error {
		if n := rep.Count("route"); n != 2 {
			return fmt.Errorf("%d route repairs counted, want 2", n)
		}
		return nil
	})

	bt.Run(t, "ip", "-n", a.NS, "link", "set", "eth0", "down")
	if routes(t, a, "-4", "10.244.2.0/24") != "" {
		t.Fatal("the kernel kept the route through a down interface; the flap test proves nothing")
	}
	bt.Run(t, "ip", "-n", a.NS, "link", "set", "eth0", "up")
	// The kernel drops IPv6 addresses on link down (keep_addr_on_down=0);
	// the host's network configuration puts them back, as here.
	bt.Run(t, "ip", "-n", a.NS, "addr", "add", "fd00:198:51:100::11/64", "dev", "eth0", "nodad")
	took = bt.WaitFor(t, 2*time.Second, "routes back after the flap", present)
	t.Logf("routes back %s after eth0 came up", took)
	if err := bt.TryPing(pa.NS, pb.Addr, 2*time.Second-took); err != nil {
		t.Fatalf("IPv4 pods do not talk within 2 s of the flap: %v", err)
	}
	bt.Ping(t, pa.NS, pb.Addr6, 56, false)
}
