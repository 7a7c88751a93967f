package ebpf

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

const (
	tcActOK       = 0
	tcActRedirect = 7
	loIfindex     = 1 // BPF_PROG_TEST_RUN runs a packet as if it came in on lo
)

var (
	podMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	peerMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	brMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	podIP    = netip.MustParseAddr("10.244.1.10")
	peerIP   = netip.MustParseAddr("10.244.1.11")
	selected = netip.MustParseAddr("10.244.1.12")
)

// frame builds an Ethernet + IPv4 + 4 bytes of ports packet.
func frame(src net.HardwareAddr, s, d netip.Addr, proto byte, etherType uint16) []byte {
	b := make([]byte, 14+20+8)
	copy(b[0:6], brMAC)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:], etherType)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(ip[2:], 28)
	s4, d4 := s.As4(), d.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], 80)
	return b
}

// The programs' decisions, run by the kernel on crafted packets
// (BPF_PROG_TEST_RUN): what they do not understand or must not take goes
// to the kernel path and is counted by reason; a packet for a pod of the
// node is redirected with the pod's MAC.
func TestFromPodDecisions(t *testing.T) {
	tbtest.NeedRoot(t)
	o, err := loadObjects()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	s := Settings{Cluster: netip.MustParsePrefix("10.244.0.0/16"), Local: netip.MustParsePrefix("10.244.1.0/24"), Uplink: 999, BridgeMAC: brMAC}
	if err := o.configure(s); err != nil {
		t.Fatal(err)
	}
	if err := o.setPods([]podEntry{
		{IP: podIP, Ifindex: loIfindex, MAC: podMAC}, {IP: peerIP, Ifindex: loIfindex, MAC: peerMAC},
		{IP: selected, Ifindex: loIfindex, MAC: podMAC, KernelOnly: true},
	}); err != nil {
		t.Fatal(err)
	}
	outside := netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct {
		name   string
		pkt    []byte
		want   uint32
		stat   int
		dstMAC net.HardwareAddr
	}{
		{"ARP", frame(podMAC, podIP, peerIP, 6, 0x0806), tcActOK, 3, nil},
		{"ICMP", frame(podMAC, podIP, peerIP, 1, 0x0800), tcActOK, 3, nil},
		{"to outside", frame(podMAC, podIP, outside, 6, 0x0800), tcActOK, 4, nil},
		{"to the bridge's address", frame(podMAC, podIP, netip.MustParseAddr("10.244.1.1"), 6, 0x0800), tcActOK, 4, nil},
		{"spoofed source MAC", frame(peerMAC, podIP, peerIP, 6, 0x0800), tcActOK, 5, nil},
		{"unknown source", frame(podMAC, netip.MustParseAddr("10.244.1.99"), peerIP, 6, 0x0800), tcActOK, 5, nil},
		{"to a selected pod", frame(podMAC, podIP, selected, 17, 0x0800), tcActOK, 6, nil},
		{"from a selected pod", frame(podMAC, selected, peerIP, 17, 0x0800), tcActOK, 6, nil},
		{"remote pod, route by another device", frame(podMAC, podIP, netip.MustParseAddr("10.244.2.5"), 6, 0x0800), tcActOK, 8, nil},
		{"pod on this node", frame(podMAC, podIP, peerIP, 6, 0x0800), tcActRedirect, 0, peerMAC},
	} {
		before, _ := o.counters()
		out := make([]byte, len(tc.pkt))
		ret, err := o.FromPod.Run(&ebpf.RunOptions{Data: tc.pkt, DataOut: out})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		after, _ := o.counters()
		if ret != tc.want || after[tc.stat] != before[tc.stat]+1 {
			t.Errorf("%s: returned %d, counter %d (%s) %d -> %d; want %d and one more", tc.name, ret, tc.stat, statNames[tc.stat].label, before[tc.stat], after[tc.stat], tc.want)
		}
		if tc.dstMAC != nil && net.HardwareAddr(out[0:6]).String() != tc.dstMAC.String() {
			t.Errorf("%s: destination MAC %s, want the pod's %s", tc.name, net.HardwareAddr(out[0:6]), tc.dstMAC)
		}
	}
	// Until the policy controller has spoken, every pod takes the kernel path.
	s.AllKernel = true
	if err := o.configure(s); err != nil {
		t.Fatal(err)
	}
	if ret, err := o.FromPod.Run(&ebpf.RunOptions{Data: frame(podMAC, podIP, peerIP, 6, 0x0800)}); err != nil || ret != tcActOK {
		t.Errorf("with policy not yet known: returned %d (%v), want the kernel path", ret, err)
	}
}

// setPods changes only what differs and removes pods that are gone.
func TestSetPods(t *testing.T) {
	tbtest.NeedRoot(t)
	o, err := loadObjects()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	a := podEntry{IP: podIP, Ifindex: 5, MAC: podMAC}
	b := podEntry{IP: peerIP, Ifindex: 6, MAC: peerMAC}
	for _, want := range [][]podEntry{{a, b}, {b}, {a}, nil} {
		if err := o.setPods(want); err != nil {
			t.Fatal(err)
		}
		var k uint32
		var v fastpathPod
		got := map[uint32]fastpathPod{}
		for it := o.Pods.Iterate(); it.Next(&k, &v); {
			got[k] = v
		}
		if len(got) != len(want) {
			t.Errorf("map holds %d pods, want %d", len(got), len(want))
		}
		for _, p := range want {
			if got[be32(p.IP)] != p.value() {
				t.Errorf("pod %s: %+v, want %+v", p.IP, got[be32(p.IP)], p.value())
			}
		}
	}
}
