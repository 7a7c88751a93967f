// Package probe sends ICMP echo requests from the caller's network
// namespace and matches the replies: the reachability and path-MTU probe
// of flanneld's per-peer health and of `flannelctl doctor`. It needs
// CAP_NET_RAW (flanneld has it) and no ping binary.
package probe

import (
	"context"
	"encoding/binary"
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
// probe waiting for it. A probe in flight is one small record in pending,
// not a goroutine: peer health keeps a thousand of them out at once.
// Safe for concurrent use.
type Pinger struct {
	frag, df *net.IPConn
	id       uint16

	mu      sync.Mutex
	seq     uint16
	serial  uint64 // counts probes sent; its low 48 bits are the token
	pending map[uint16]pending
	closed  chan struct{}
}

// ID names one probe in flight: its sequence number in the top 16 bits,
// its token in the low 48. It is also the first 8 bytes of the probe's
// payload, which the reply echoes: a late reply to an old probe whose
// sequence number a newer one reuses after the 16-bit wrap carries the
// old token and is dropped.
type ID uint64

const tokenBits = 48

func (id ID) seq() uint16 { return uint16(id >> tokenBits) }

// pending is a probe waiting for its reply.
type pending struct {
	id      ID
	dst     netip.Addr
	sent    time.Time
	tokened bool // the payload carries id; without room for it the source address alone must match
	onReply func(rtt time.Duration)
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
	// A random start keeps a restarted flanneld's tokens apart from the
	// replies still on their way to its predecessor.
	p := &Pinger{frag: frag, df: df, id: uint16(rand.N(1 << 16)), serial: rand.Uint64(), pending: map[uint16]pending{}, closed: make(chan struct{})}
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
			growSendBuffer(int(fd))
		})
		return errors.Join(err, serr)
	}}
	c, err := lc.ListenPacket(context.Background(), "ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("open raw ICMP socket (needs CAP_NET_RAW, i.e. run as root): %w", err)
	}
	return c.(*net.IPConn), nil
}

// sendBuffer is the raw sockets' send buffer. A probe stays charged to
// its socket while the kernel holds it, and a probe through VXLAN to a
// peer whose underlay address does not answer ARP waits up to 3 s in the
// neighbour's queue. With the default buffer (208 KiB) about 500 such
// probes fill it, and every further probe, also to healthy peers, fails
// with ENOBUFS: at 1000 probes a second (10000 peers), a few hundred dead
// nodes would make healthy ones look lossy. The memory is used only while
// probes wait; the kernel doubles the value and allows twice that.
const sendBuffer = 1 << 20

// growSendBuffer raises the send buffer past net.core.wmem_max where
// flanneld may (CAP_NET_ADMIN), else as far as wmem_max allows. Best
// effort: a small buffer costs false losses only under mass outages.
func growSendBuffer(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
	}
}

// Close stops the reader and closes the sockets; no reply is delivered
// after it, and Ping waits out its timeout.
func (p *Pinger) Close() error {
	close(p.closed)
	return errors.Join(p.frag.Close(), p.df.Close())
}

func (p *Pinger) read(c *net.IPConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromIP(buf)
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
		now := time.Now()
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || uint16(echo.ID) != p.id {
			continue
		}
		src, _ := netip.AddrFromSlice(from.IP)
		if pr, ok := p.match(uint16(echo.Seq), src.Unmap(), echo.Data); ok {
			// Outside the lock: onReply may take its owner's lock, and
			// its owner may call Send or Cancel holding that lock.
			pr.onReply(now.Sub(pr.sent))
		}
	}
}

// match takes the probe a reply answers off pending: same sequence
// number, from the probed address, and (when the payload has room for
// it) carrying the probe's token.
func (p *Pinger) match(seq uint16, src netip.Addr, data []byte) (pending, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, ok := p.pending[seq]
	if !ok || src != pr.dst {
		return pending{}, false
	}
	if pr.tokened && (len(data) < 8 || ID(binary.BigEndian.Uint64(data)) != pr.id) {
		return pending{}, false
	}
	delete(p.pending, seq)
	return pr, true
}

// Send sends one echo request with size bytes of payload (as `ping -s`:
// the IP packet is size+28 bytes; with df it may not be fragmented
// anywhere on its way) and returns at once. When the reply comes,
// onReply runs once with the round-trip time, on the Pinger's reader
// goroutine: it must not block. Every probe sent must be cancelled or
// answered: call Cancel when done waiting, or the record stays.
func (p *Pinger) Send(dst netip.Addr, size int, df bool, onReply func(rtt time.Duration)) (ID, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("probe %s: only IPv4 is probed", dst)
	}
	id, err := p.register(dst, size >= 8, onReply)
	if err != nil {
		return 0, err
	}
	data := make([]byte, size)
	if size >= 8 {
		binary.BigEndian.PutUint64(data, uint64(id))
	}
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(p.id), Seq: int(id.seq()), Data: data}}
	b, err := msg.Marshal(nil)
	if err == nil {
		c := p.frag
		if df {
			c = p.df
		}
		_, err = c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()})
	}
	if err != nil {
		p.Cancel(id)
		if errors.Is(err, unix.EMSGSIZE) {
			return 0, fmt.Errorf("probe %s with %d bytes, don't fragment: %w", dst, size+28, ErrTooBig)
		}
		return 0, fmt.Errorf("send probe to %s: %w", dst, err)
	}
	return id, nil
}

// register records a probe before it is sent (its reply may come before
// WriteTo returns). After the 16-bit sequence number wraps it skips the
// numbers of probes still waiting, so two probes in flight never share one.
func (p *Pinger) register(dst netip.Addr, tokened bool, onReply func(time.Duration)) (ID, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) >= 1<<16 {
		return 0, fmt.Errorf("probe %s: 65536 probes are waiting for replies already (a caller does not cancel its probes)", dst)
	}
	p.seq++
	for _, busy := p.pending[p.seq]; busy; _, busy = p.pending[p.seq] {
		p.seq++
	}
	p.serial++
	id := ID(p.seq)<<tokenBits | ID(p.serial&(1<<tokenBits-1))
	p.pending[p.seq] = pending{id: id, dst: dst, sent: time.Now(), tokened: tokened, onReply: onReply}
	return id, nil
}

// Cancel stops waiting for a probe's reply; a reply that comes later is
// dropped. It reports whether the probe was still waiting: false means
// its reply came first and onReply has run or is about to.
func (p *Pinger) Cancel(id ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr, ok := p.pending[id.seq()]; ok && pr.id == id {
		delete(p.pending, id.seq())
		return true
	}
	return false
}

// Ping sends one echo request (see Send) and waits up to timeout for the
// reply.
func (p *Pinger) Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) (time.Duration, error) {
	replied := make(chan time.Duration, 1)
	id, err := p.Send(dst, size, df, func(rtt time.Duration) { replied <- rtt })
	if err != nil {
		return 0, err
	}
	defer p.Cancel(id)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case rtt := <-replied:
		return rtt, nil
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
