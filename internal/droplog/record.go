// Package droplog turns the packets network policy drops into records an
// operator reads: the kernel logs a rate-limited sample of them to an
// NFLOG group (the nftables table's log chains, internal/netpol), this
// package reads the group, names the pods and the policies from the same
// model `flannelctl policy explain` uses, keeps the latest records for
// `flannelctl policy drops` and writes them out as JSON lines.
package droplog

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"time"
)

// Endpoint is one side of a dropped packet: a pod when the address is one,
// else the address alone.
type Endpoint struct {
	IP        netip.Addr `json:"ip"`
	Namespace string     `json:"namespace,omitempty"`
	Pod       string     `json:"pod,omitempty"`
}

func (e Endpoint) String() string {
	if e.Pod == "" {
		return e.IP.String()
	}
	return e.Namespace + "/" + e.Pod
}

// Record is one dropped packet.
type Record struct {
	Time      time.Time `json:"time"`
	Node      string    `json:"node,omitempty"`
	Direction string    `json:"direction"` // ingress of the destination pod, egress of the source pod
	Source    Endpoint  `json:"source"`
	Dest      Endpoint  `json:"destination"`
	Proto     string    `json:"protocol"`
	Port      uint16    `json:"port,omitempty"`
	// Policies are the NetworkPolicies that isolate the pod (its direction),
	// none of whose rules allowed the packet.
	Policies []string `json:"policies"`
	// Reason is "policy" or "anti-spoofing".
	Reason string `json:"reason"`
}

// flow is what a record needs from a packet's headers.
type flow struct {
	src, dst netip.Addr
	proto    string
	port     uint16
}

var errShort = errors.New("packet too short")

// parseFlow reads the addresses, the protocol and the destination port of
// an IPv4 or IPv6 packet (IPv6 extension headers are not walked: such a
// packet is recorded without its port).
func parseFlow(b []byte) (flow, error) {
	if len(b) < 1 {
		return flow{}, errShort
	}
	var f flow
	var proto byte
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < 20 || ihl < 20 {
			return flow{}, errShort
		}
		f.src, f.dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		proto = b[9]
		if len(b) > ihl {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return flow{}, errShort
		}
		f.src, f.dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		proto = b[6]
		l4 = b[40:]
	default:
		return flow{}, errors.New("not an IP packet")
	}
	f.proto = protoName(proto)
	if (proto == 6 || proto == 17 || proto == 132) && len(l4) >= 4 {
		f.port = binary.BigEndian.Uint16(l4[2:4])
	}
	return f, nil
}

func protoName(p byte) string {
	switch p {
	case 1:
		return "ICMP"
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 58:
		return "ICMPv6"
	case 132:
		return "SCTP"
	}
	return "proto-" + strconv.Itoa(int(p))
}
