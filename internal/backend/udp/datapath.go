package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/pace"
)

const (
	// headroom is kept in front of every packet buffer: the TUN device
	// writes its virtio-net header there.
	headroom = 16
	// bufSize holds the largest UDP datagram, or a GSO/GRO batch of them.
	bufSize = 1 << 16
)

// dataPath moves packets between flannel0 and the UDP socket.
type dataPath struct {
	name  string
	mtu   int
	dev   atomic.Pointer[tunDevice]
	bind  conn.Bind
	recv  []conn.ReceiveFunc
	peers atomic.Pointer[peerTable]

	// mu orders a re-creation of flannel0 against the shutdown, so that
	// no device outlives the data path.
	mu     sync.Mutex
	closed bool

	noPeer    atomic.Uint64 // packets from flannel0 for an address no peer owns
	malformed atomic.Uint64 // datagrams that are not an IPv4 packet
	sendErrs  atomic.Uint64
}

// tunDevice boxes the interface for atomic.Pointer.
type tunDevice struct{ tun.Device }

func openDataPath(name string, mtu int, port uint16) (*dataPath, error) {
	dev, err := createTUN(name, mtu)
	if err != nil {
		return nil, err
	}
	bind := conn.NewStdNetBind()
	recv, _, err := bind.Open(port)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("listen on UDP port %d: %w (another process holds it; choose another Backend Port for the whole network)", port, err)
	}
	dp := &dataPath{name: name, mtu: mtu, bind: bind, recv: recv}
	dp.dev.Store(&tunDevice{dev})
	dp.peers.Store(newPeerTable(nil))
	return dp, nil
}

func createTUN(name string, mtu int) (tun.Device, error) {
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN device %s: %w (is another flanneld running on this node?)", name, err)
	}
	return dev, nil
}

// offloads says whether the TUN device hands over whole TCP segments.
func (dp *dataPath) offloads() bool { return dp.dev.Load().BatchSize() > 1 }

func (dp *dataPath) setPeers(t *peerTable) { dp.peers.Store(t) }

// start runs the packet loops until ctx ends, then closes the device and
// the socket, which ends the loops.
func (dp *dataPath) start(ctx context.Context) {
	dp.readFrom(dp.dev.Load())
	for _, fn := range dp.recv {
		go dp.toTUN(fn)
	}
	go func() {
		<-ctx.Done()
		dp.mu.Lock()
		defer dp.mu.Unlock()
		dp.closed = true
		dp.bind.Close()
		dp.dev.Load().Close()
	}()
}

// readFrom starts the loops that drain one device.
func (dp *dataPath) readFrom(dev *tunDevice) {
	go func() {
		for range dev.Events() { // the device blocks if nobody listens
		}
	}()
	go dp.fromTUN(dev)
}

// reopen replaces a flannel0 that was deleted: reads from the old one
// fail, which ended its loop. The socket and the peers stay.
func (dp *dataPath) reopen() error {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.closed {
		return fmt.Errorf("re-create %s: the data path is shut down", dp.name)
	}
	dev, err := createTUN(dp.name, dp.mtu)
	if err != nil {
		return err
	}
	box := &tunDevice{dev}
	dp.dev.Swap(box).Close()
	dp.readFrom(box)
	return nil
}

func newBuffers(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		// Each its own allocation: UDP GSO appends the following
		// packets of a batch to the first one's buffer.
		bufs[i] = make([]byte, headroom+bufSize)
	}
	return bufs
}

// fromTUN reads packets for other nodes from flannel0 and sends each, as
// it is, to the node owning its destination, consecutive packets for one
// node in one batch. It ends when dev is closed or deleted.
func (dp *dataPath) fromTUN(dev *tunDevice) {
	bufs := newBuffers(dev.BatchSize())
	sizes := make([]int, len(bufs))
	out := make([][]byte, 0, len(bufs))
	// A persistent error must not make a hot loop of this one.
	slow := pace.New(pace.Policy{Min: 10 * time.Millisecond, Max: time.Second})
	for {
		n, err := dev.Read(bufs, sizes, headroom)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if !errors.Is(err, tun.ErrTooManySegments) {
				wait := slow.Next()
				klog.Errorf("udp: read from %s: %v (next read in %s)", DeviceName, err, wait)
				time.Sleep(wait)
			}
			continue
		}
		slow.Reset()
		table := dp.peers.Load()
		var cur conn.Endpoint
		out = out[:0]
		for i := range n {
			pkt := bufs[i][headroom : headroom+sizes[i]]
			ep := table.lookup(pkt)
			if ep == nil {
				dp.noPeer.Add(1)
				continue
			}
			if ep != cur && len(out) > 0 {
				dp.send(out, cur)
				out = out[:0]
			}
			cur = ep
			out = append(out, pkt)
		}
		if len(out) > 0 {
			dp.send(out, cur)
		}
	}
}

func (dp *dataPath) send(pkts [][]byte, ep conn.Endpoint) {
	if err := dp.bind.Send(pkts, ep); err != nil && !errors.Is(err, net.ErrClosed) {
		if dp.sendErrs.Add(1)%1000 == 1 {
			klog.Errorf("udp: send to %s: %v", ep.DstToString(), err)
		}
	}
}

// toTUN receives datagrams from peers and writes their payloads, IPv4
// packets, to flannel0 in batches.
func (dp *dataPath) toTUN(recv conn.ReceiveFunc) {
	bufs := newBuffers(dp.bind.BatchSize())
	pkts := make([][]byte, len(bufs))
	for i := range bufs {
		pkts[i] = bufs[i][headroom:]
	}
	sizes := make([]int, len(bufs))
	eps := make([]conn.Endpoint, len(bufs))
	out := make([][]byte, 0, len(bufs))
	for {
		n, err := recv(pkts, sizes, eps)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			klog.V(2).Infof("udp: receive: %v", err)
			continue
		}
		out = out[:0]
		for i := range n {
			if sizes[i] < 20 || pkts[i][0]>>4 != 4 {
				dp.malformed.Add(1)
				continue
			}
			out = append(out, bufs[i][:headroom+sizes[i]])
		}
		if len(out) == 0 {
			continue
		}
		if _, err := dp.dev.Load().Write(out, headroom); err != nil && !errors.Is(err, os.ErrClosed) {
			klog.V(2).Infof("udp: write to %s: %v", DeviceName, err)
		}
	}
}

func (dp *dataPath) collectors() []prometheus.Collector {
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{
		counter("flannel_udp_no_peer_drops_total",
			"Packets from flannel0 dropped because no node owns their destination (a node that left, or an address outside every lease).", &dp.noPeer),
		counter("flannel_udp_malformed_drops_total", "Datagrams received on the udp backend's port that are not an IPv4 packet.", &dp.malformed),
		counter("flannel_udp_send_errors_total", "Failed sends of encapsulated packets.", &dp.sendErrs),
	}
}
