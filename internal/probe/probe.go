// Package probe sends ICMP echo requests from the caller's network
// namespace and matches the replies: the reachability and path-MTU probe
// of flanneld's per-peer health and of `flannelctl doctor`. It needs
// CAP_NET_RAW (flanneld has it) and no ping binary.
package probe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// ErrTimeout is returned (wrapped) when no reply came in time.
var ErrTimeout = errors.New("no echo reply")

// ErrTooBig is returned (wrapped) when a don't-fragment probe does not fit
// the local route's MTU: the kernel refused to send it.
var ErrTooBig = errors.New("larger than the route's MTU")

// Pinger owns two raw ICMP sockets (one that fragments, one that sets
// don't-fragment) and one reader goroutine that hands each reply to the
// probe waiting for it. Safe for concurrent use.
type Pinger struct {
	frag, df *net.IPConn
	id       uint16

	mu      sync.Mutex
	seq     uint16
	pending map[uint16]chan struct{}
	closed  chan struct{}
}

// NewPinger opens the sockets in the current network namespace.
func NewPinger() (*Pinger, error) {
	frag, err := listen(unix.IP_PMTUDISC_DONT)
	if err != nil {
		return nil, err
	}
	df, err := listen(unix.IP_PMTUDISC_PROBE)
	if err != nil {
		frag.Close()
		return nil, err
	}
	// Every raw ICMP socket gets a copy of every ICMP packet: the kernel
	// keeps only echo replies for the reading socket and nothing for the
	// sending-only one, so other nodes' probes of us cost no wake-ups.
	var replies, none ipv4.ICMPFilter
	replies.SetAll(true)
	replies.Accept(ipv4.ICMPTypeEchoReply)
	none.SetAll(true)
	ferr := errors.Join(ipv4.NewPacketConn(frag).SetICMPFilter(&replies), ipv4.NewPacketConn(df).SetICMPFilter(&none))
	if ferr != nil {
		frag.Close()
		df.Close()
		return nil, fmt.Errorf("set ICMP filter: %w", ferr)
	}
	p := &Pinger{frag: frag, df: df, id: uint16(rand.N(1 << 16)), pending: map[uint16]chan struct{}{}, closed: make(chan struct{})}
	go p.read(frag) // replies to probes sent on either socket land here
	return p, nil
}

// listen opens a raw ICMP socket with the given IP_MTU_DISCOVER mode:
// DONT lets the kernel fragment; PROBE sets DF and ignores any cached path
// MTU, so each probe measures the path afresh.
func listen(mode int) (*net.IPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, mode)
		})
		return errors.Join(err, serr)
	}}
	c, err := lc.ListenPacket(context.Background(), "ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("open raw ICMP socket (needs CAP_NET_RAW, i.e. run as root): %w", err)
	}
	return c.(*net.IPConn), nil
}

// Close stops the reader and closes the sockets; pending probes time out.
func (p *Pinger) Close() error {
	close(p.closed)
	return errors.Join(p.frag.Close(), p.df.Close())
}

func (p *Pinger) read(c *net.IPConn) {
	buf := make([]byte, 65536)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			select {
			case <-p.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || uint16(echo.ID) != p.id {
			continue
		}
		p.mu.Lock()
		if ch, ok := p.pending[uint16(echo.Seq)]; ok {
			delete(p.pending, uint16(echo.Seq))
			close(ch)
		}
		p.mu.Unlock()
	}
}

// Ping sends one echo request with size bytes of payload (as `ping -s`:
// the IP packet is size+28 bytes) and waits up to timeout for the reply.
// With df the packet may not be fragmented anywhere on its way.
func (p *Pinger) Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("probe %s: only IPv4 is probed", dst)
	}
	p.mu.Lock()
	p.seq++
	seq := p.seq
	done := make(chan struct{})
	p.pending[seq] = done
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, seq)
		p.mu.Unlock()
	}()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(p.id), Seq: int(seq), Data: make([]byte, size)}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	c := p.frag
	if df {
		c = p.df
	}
	start := time.Now()
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		if errors.Is(err, unix.EMSGSIZE) {
			return 0, fmt.Errorf("probe %s with %d bytes, don't fragment: %w", dst, size+28, ErrTooBig)
		}
		return 0, fmt.Errorf("send probe to %s: %w", dst, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return time.Since(start), nil
	case <-t.C:
		return 0, fmt.Errorf("%s (%d bytes, df=%v) within %s: %w", dst, size+28, df, timeout, ErrTimeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Reachable pings dst up to tries times and reports whether any answered.
func (p *Pinger) Reachable(ctx context.Context, dst netip.Addr, size int, df bool, tries int, timeout time.Duration) bool {
	for range tries {
		if _, err := p.Ping(ctx, dst, size, df, timeout); err == nil {
			return true
		}
	}
	return false
}
