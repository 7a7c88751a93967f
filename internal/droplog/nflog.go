package droplog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Constants of the kernel's nfnetlink_log interface
// (include/uapi/linux/netfilter/nfnetlink_log.h).
const (
	subsysULOG    = 4
	msgPacket     = 0
	msgConfig     = 1
	cfgCmd        = 1
	cfgMode       = 2
	cfgTimeout    = 3
	cfgQThresh    = 4
	cmdBind       = 1
	copyPacket    = 2
	attrTimestamp = 3
	attrInDev     = 4
	attrPhysInDev = 6
	attrPayload   = 9
	attrPrefix    = 10
)

// Packet is one packet the kernel logged to the group.
type Packet struct {
	Time   time.Time
	Prefix string // the nftables rule's log prefix
	// InDev is the index of the interface the packet came in on: in the
	// bridge family the bridge port (the kernel reports the port as the
	// physical input device there, and the bridge as the input device).
	InDev   uint32
	Payload []byte // from the network header on, at most copyRange bytes
}

// copyRange is how much of each packet the kernel copies: the IPv6 header
// and the ports of the transport header are all a record needs.
const copyRange = 64

// Conn is a socket bound to one NFLOG group of this network namespace.
type Conn struct {
	c     *netlink.Conn
	group uint16
}

// Listen binds the group. The kernel batches messages for up to flush
// (rounded to 10 ms) so that a flood costs one wake-up per batch, not per
// packet.
func Listen(group uint16, flush time.Duration) (*Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open netfilter netlink socket for the policy drop log: %w", err)
	}
	n := &Conn{c: c, group: group}
	if err := n.config(netlink.Attribute{Type: cfgCmd, Data: []byte{cmdBind}}); err != nil {
		c.Close()
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("bind NFLOG group %d: %w (another process reads this group: choose another --policy-drop-log-group)", group, err)
		}
		return nil, fmt.Errorf("bind NFLOG group %d: %w (is nfnetlink_log available? modprobe nfnetlink_log)", group, err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = copyPacket
	ticks := make([]byte, 4)
	binary.BigEndian.PutUint32(ticks, uint32(max(flush/(10*time.Millisecond), 1)))
	thresh := make([]byte, 4)
	binary.BigEndian.PutUint32(thresh, 64)
	if err := n.config(netlink.Attribute{Type: cfgMode, Data: mode}, netlink.Attribute{Type: cfgTimeout, Data: ticks},
		netlink.Attribute{Type: cfgQThresh, Data: thresh}); err != nil {
		c.Close()
		return nil, fmt.Errorf("configure NFLOG group %d: %w", group, err)
	}
	// A flood fills the socket between reads; a larger buffer loses fewer
	// records (the kernel counters lose none either way).
	_ = c.SetReadBuffer(1 << 20)
	return n, nil
}

func (n *Conn) config(attrs ...netlink.Attribute) error {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	_, err = n.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(n.genHeader(), b...),
	})
	return err
}

// genHeader is struct nfgenmsg: family (unspecified), version 0, the group
// as resource id.
func (n *Conn) genHeader() []byte {
	h := []byte{unix.AF_UNSPEC, 0, 0, 0}
	binary.BigEndian.PutUint16(h[2:], n.group)
	return h
}

// Close releases the group.
func (n *Conn) Close() error { return n.c.Close() }

// ErrOverrun says the socket's buffer overflowed: the kernel dropped log
// messages (never packets or counts) since the last read.
var ErrOverrun = errors.New("NFLOG socket buffer overrun")

// Read returns the next batch of logged packets.
func (n *Conn) Read() ([]Packet, error) {
	msgs, err := n.c.Receive()
	if errors.Is(err, unix.ENOBUFS) {
		return nil, ErrOverrun
	}
	if err != nil {
		return nil, fmt.Errorf("read NFLOG group %d: %w", n.group, err)
	}
	out := make([]Packet, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(subsysULOG<<8|msgPacket) || len(m.Data) < 4 {
			continue
		}
		if p, err := parsePacket(m.Data[4:]); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

func parsePacket(b []byte) (Packet, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Packet{}, err
	}
	ad.ByteOrder = binary.BigEndian
	p := Packet{Time: time.Now()}
	for ad.Next() {
		switch ad.Type() {
		case attrPrefix:
			p.Prefix = ad.String()
		case attrPayload:
			p.Payload = ad.Bytes()
		case attrInDev:
			if p.InDev == 0 {
				p.InDev = ad.Uint32()
			}
		case attrPhysInDev:
			p.InDev = ad.Uint32()
		case attrTimestamp:
			if ts := ad.Bytes(); len(ts) == 16 {
				p.Time = time.Unix(int64(binary.BigEndian.Uint64(ts)), int64(binary.BigEndian.Uint64(ts[8:]))*1000)
			}
		}
	}
	return p, ad.Err()
}
