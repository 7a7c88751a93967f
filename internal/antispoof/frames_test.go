package antispoof

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// sendFrame writes one raw Ethernet frame on ifname of the calling
// thread's namespace, as a pod with CAP_NET_RAW can.
func sendFrame(ifname string, frame []byte) error {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6})
}

// arpReply is a gratuitous ARP reply: "ip is at mac".
func arpReply(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := append(broadcast(), mac...)
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_ARP)
	b = append(b, 0, 1, 8, 0, 6, 4, 0, 2)
	b = append(b, mac...)
	b = append(b, ip.AsSlice()...)
	b = append(b, broadcast()...)
	return append(b, ip.AsSlice()...)
}

func broadcast() []byte { return []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }

// neighborAdvert is an unsolicited neighbour advertisement from src to
// all nodes, with the override flag: "target is at mac".
func neighborAdvert(mac net.HardwareAddr, src, target netip.Addr) []byte {
	dst := netip.MustParseAddr("ff02::1")
	icmp := []byte{136, 0, 0, 0, 0x20, 0, 0, 0}
	icmp = append(icmp, target.AsSlice()...)
	icmp = append(icmp, 2, 1)
	icmp = append(icmp, mac...)
	sum := checksum6(src, dst, icmp)
	binary.BigEndian.PutUint16(icmp[2:], sum)
	b := append([]byte{0x33, 0x33, 0, 0, 0, 1}, mac...)
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(icmp)))
	b = append(b, unix.IPPROTO_ICMPV6, 255)
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	return append(b, icmp...)
}

func checksum6(src, dst netip.Addr, payload []byte) uint16 {
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(payload)))
	pseudo = append(pseudo, 0, 0, 0, unix.IPPROTO_ICMPV6)
	pseudo = append(pseudo, payload...)
	if len(pseudo)%2 == 1 {
		pseudo = append(pseudo, 0)
	}
	var s uint32
	for i := 0; i < len(pseudo); i += 2 {
		s += uint32(binary.BigEndian.Uint16(pseudo[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
