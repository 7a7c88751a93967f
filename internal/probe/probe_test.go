package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// In a namespace whose loopback has MTU 1280: an echo answers, a DF probe
// larger than the MTU is refused by the kernel, the same size without DF
// is fragmented and answers, and an address nobody holds times out.
func TestPing(t *testing.T) {
	tbtest.NeedRoot(t, "ip")
	ns := tbtest.NS(t, fmt.Sprintf("fl-prb-%d", os.Getpid()))
	for _, argv := range [][]string{
		{"ip", "-n", ns, "link", "set", "lo", "mtu", "1280", "up"},
		{"ip", "-n", ns, "route", "add", "10.244.250.0/24", "dev", "lo"}, // not local: dropped, never answered
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	var p *Pinger
	if err := testbed.InNamespace(ns, func() (err error) { p, err = NewPinger(); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	if rtt, err := p.Ping(ctx, lo, 56, true, time.Second); err != nil || rtt <= 0 {
		t.Errorf("ping 127.0.0.1: rtt %s, %v", rtt, err)
	}
	if _, err := p.Ping(ctx, lo, 1280-28, true, time.Second); err != nil {
		t.Errorf("DF probe of exactly the MTU: %v", err)
	}
	if _, err := p.Ping(ctx, lo, 1281-28, true, time.Second); !errors.Is(err, ErrTooBig) {
		t.Errorf("DF probe one byte over the MTU: %v, want ErrTooBig", err)
	}
	if _, err := p.Ping(ctx, lo, 2000, false, time.Second); err != nil {
		t.Errorf("fragmented probe: %v", err)
	}
	start := time.Now()
	if _, err := p.Ping(ctx, netip.MustParseAddr("10.244.250.1"), 56, false, 300*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("probe nobody answers: %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > time.Second {
		t.Errorf("timeout after %s, want 300ms", took)
	}
}

// Sequence numbers are 16 bits: with many probes out they wrap. In a
// namespace that answers no echo (so the test writes the replies itself),
// probe a waits across a full wrap and keeps its number; probe c, sent
// after the wrap to the same address, reuses the number of the cancelled
// probe b. b's late reply (c's sequence number, c's address, b's token),
// and a reply with c's number and token from another address, are not
// credited to c; a's and c's own replies are.
func TestSequenceWrap(t *testing.T) {
	tbtest.NeedRoot(t, "ip", "sysctl")
	ns := tbtest.NS(t, fmt.Sprintf("fl-prw-%d", os.Getpid()))
	tbtest.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
	peer, other := netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.5")
	var p *Pinger
	var fromPeer, fromOther net.PacketConn
	if err := testbed.InNamespace(ns, func() (err error) {
		if p, err = NewPinger(); err != nil {
			return err
		}
		if fromPeer, err = net.ListenPacket("ip4:icmp", peer.String()); err != nil {
			return err
		}
		fromOther, err = net.ListenPacket("ip4:icmp", other.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer fromPeer.Close()
	defer fromOther.Close()

	replied := make(chan string, 8)
	on := func(name string) func(time.Duration) { return func(time.Duration) { replied <- name } }
	send := func(dst netip.Addr, name string) ID {
		t.Helper()
		id, err := p.Send(dst, 16, false, on(name))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a := send(peer, "a")
	b := send(peer, "b")
	if !p.Cancel(b) {
		t.Fatal("cancel of an unanswered probe reports it answered")
	}
	for range 1<<16 - 2 {
		p.Cancel(send(netip.MustParseAddr("127.0.0.4"), "filler"))
	}
	c := send(peer, "c")
	if c.seq() == a.seq() || c.seq() != b.seq() {
		t.Fatalf("after the wrap c has sequence number %d, a %d, b %d: want c to skip a's and reuse b's", c.seq(), a.seq(), b.seq())
	}
	reply := func(from net.PacketConn, id ID) {
		t.Helper()
		data := make([]byte, 16)
		binary.BigEndian.PutUint64(data, uint64(id))
		b, err := (&icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: &icmp.Echo{ID: int(p.id), Seq: int(id.seq()), Data: data}}).Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := from.WriteTo(b, &net.IPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	next := func() string {
		t.Helper()
		select {
		case name := <-replied:
			return name
		case <-time.After(5 * time.Second):
			t.Fatal("no reply delivered within 5s")
			return ""
		}
	}
	reply(fromPeer, b)  // late reply to b: c's number, c's address, b's token
	reply(fromOther, c) // c's number and token from an address c did not probe
	reply(fromPeer, a)  // the reader handles replies in order: a's comes after both
	if got := next(); got != "a" {
		t.Errorf("first reply credited to %s, want a (b's late reply or another address's must not answer c)", got)
	}
	reply(fromPeer, c)
	if got := next(); got != "c" {
		t.Errorf("c's own reply credited to %s, want c", got)
	}
	if p.Cancel(a) || p.Cancel(c) {
		t.Error("cancel of an answered probe reports it still waiting")
	}
}

// Probes to addresses whose ARP is never answered stay charged to the
// socket while they wait in the neighbour queues (3 s): 2000 of them to
// 250 such addresses, as peer health sends to dead nodes at scale, are
// all sent. With the default send buffer three in four failed with
// ENOBUFS, and so would probes to healthy peers after them.
func TestSendWhileARPPending(t *testing.T) {
	tbtest.NeedRoot(t, "ip")
	ns := tbtest.NS(t, fmt.Sprintf("fl-pra-%d", os.Getpid()))
	// v1 has no address: v0's ARP requests for 203.0.113.2-251 go unanswered.
	tbtest.Run(t, "ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	tbtest.Run(t, "ip", "-n", ns, "addr", "add", "203.0.113.1/24", "dev", "v0")
	tbtest.Run(t, "ip", "-n", ns, "link", "set", "v0", "up")
	tbtest.Run(t, "ip", "-n", ns, "link", "set", "v1", "up")
	var p *Pinger
	if err := testbed.InNamespace(ns, func() (err error) { p, err = NewPinger(); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	failed, last := 0, error(nil)
	for i := range 2000 {
		id, err := p.Send(netip.AddrFrom4([4]byte{203, 0, 113, byte(2 + i%250)}), 16, false, func(time.Duration) {})
		if err != nil {
			failed, last = failed+1, err
			continue
		}
		p.Cancel(id)
	}
	if failed > 0 {
		t.Errorf("%d of 2000 probes not sent while ARP is pending, last: %v", failed, last)
	}
}
