package droplog

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/netpol"
)

// The kernel logs a packet to the group and Read hands it back whole
// enough for a record: the prefix, the addresses, the protocol and port.
func TestListenReadsLoggedPacket(t *testing.T) {
	tbtest.NeedRoot(t, "nft", "ip")
	ns := tbtest.NS(t, "fl-droplog-nflog")
	tbtest.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	var c *Conn
	tbtest.InNS(t, ns, func() {
		var err error
		if c, err = Listen(7, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	tbtest.Run(t, "ip", "netns", "exec", ns, "nft", "add table inet t; add chain inet t out { type filter hook output priority 0; }; "+
		`add rule inet t out udp dport 9 log prefix "`+netpol.LogPrefixIngress+`" group 7`)
	tbtest.InNS(t, ns, func() {
		u, err := net.Dial("udp", "127.0.0.1:9")
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		u.Write([]byte("x"))
	})
	if err := c.c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	pkts, err := c.Read()
	if err != nil || len(pkts) != 1 {
		t.Fatalf("read: %d packets, %v", len(pkts), err)
	}
	r, ok := New("n1", nil, nil).record(pkts[0])
	lo := netip.MustParseAddr("127.0.0.1")
	if !ok || r.Direction != "ingress" || r.Source.IP != lo || r.Dest.IP != lo || r.Proto != "UDP" || r.Port != 9 || r.Node != "n1" {
		t.Fatalf("record %+v (ok %v) from %+v", r, ok, pkts[0])
	}
}
