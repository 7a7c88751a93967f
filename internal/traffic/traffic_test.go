package traffic

import (
	"fmt"
	"net/netip"
	"testing"
)

// trafficNet is a node with one local pod, an underlay host outside the
// pod network and a pod of "another node" routed through this node, dual
// stack:
//
//	pod 10.244.1.2 ── pod0 10.244.1.1 [node] uplink 198.51.100.11 ── 198.51.100.254 out
//	    fd00:10:244:1::2   fd00:10:244:1::1   │   fd00:198:51:100::11 ── fd00:198:51:100::254
//	                          peer0 10.244.1.0/32, fd00:10:244:1::/128 (like flannel.1)
//	                            │
//	                          10.244.2.2, fd00:10:244:2::2 peer
type trafficNet struct {
	pod, node, out, peer *testNS
}

func newTrafficNet(t *testing.T) *trafficNet {
	t.Helper()
	l := &trafficNet{
		pod:  newNS(t, "ttr-pod"),
		node: newNS(t, "ttr-node"),
		out:  newNS(t, "ttr-out"),
		peer: newNS(t, "ttr-peer"),
	}
	for _, ns := range []*testNS{l.pod, l.node, l.out, l.peer} {
		// Before any link exists, so every veth inherits it: no duplicate
		// address detection to wait for. And out has no route back to the
		// pods; strict reverse-path filtering would drop an un-masqueraded
		// datagram before the listener could report its source.
		ns.sh(t, `echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
			for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done`)
	}
	link(t, l.pod, "eth0", "10.244.1.2/24", l.node, "pod0", "10.244.1.1/24")
	link(t, l.node, "uplink", "198.51.100.11/24", l.out, "eth0", "198.51.100.254/24")
	link(t, l.node, "peer0", "10.244.1.0/32", l.peer, "eth0", "10.244.2.2/24")
	addAddr(t, l.pod, "eth0", "fd00:10:244:1::2/64")
	addAddr(t, l.node, "pod0", "fd00:10:244:1::1/64")
	addAddr(t, l.node, "uplink", "fd00:198:51:100::11/64")
	addAddr(t, l.out, "eth0", "fd00:198:51:100::254/64")
	addAddr(t, l.node, "peer0", "fd00:10:244:1::/128")
	addAddr(t, l.peer, "eth0", "fd00:10:244:2::2/64")
	route(t, l.pod, "", "10.244.1.1", "eth0")
	route(t, l.pod, "", "fd00:10:244:1::1", "eth0")
	route(t, l.node, "10.244.2.0/24", "", "peer0")
	route(t, l.node, "fd00:10:244:2::/64", "", "peer0")
	route(t, l.peer, "10.244.1.0/24", "10.244.1.0", "eth0")
	route(t, l.peer, "fd00:10:244:1::/64", "fd00:10:244:1::", "eth0")
	l.node.sh(t, "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
	return l
}

func TestTrafficMasquerade(t *testing.T) {
	type path struct {
		family        string
		outside, peer string     // listener addresses
		pod, node     netip.Addr // what the listener may see
	}
	paths := []path{
		{family: "IPv4", outside: "198.51.100.254", peer: "10.244.2.2",
			pod: netip.MustParseAddr("10.244.1.2"), node: netip.MustParseAddr("198.51.100.11")},
		{family: "IPv6", outside: "fd00:198:51:100::254", peer: "fd00:10:244:2::2",
			pod: netip.MustParseAddr("fd00:10:244:1::2"), node: netip.MustParseAddr("fd00:198:51:100::11")},
	}
	for _, im := range impls {
		for _, masq := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/masquerade=%v", im.name, masq), func(t *testing.T) {
				requireRoot(t)
				guardRootNamespace(t)
				tn := newTrafficNet(t)
				cfg := dualConfig()
				cfg.Masquerade = masq
				m := newManagerIn(t, tn.node, im, cfg)
				applyIn(t, tn.node, m)

				for _, p := range paths {
					wantOut := p.pod
					if masq {
						wantOut = p.node
					}
					if got := sourceSeenBy(t, tn.pod, tn.out, p.outside); got != wantOut {
						t.Errorf("%s: pod -> outside arrived from %s, want %s", p.family, got, wantOut)
					}
					if got := sourceSeenBy(t, tn.pod, tn.peer, p.peer); got != p.pod {
						t.Errorf("%s: pod -> pod on another node arrived from %s, want the pod's own %s", p.family, got, p.pod)
					}
				}
				if !masq {
					return
				}
				// Without the rules the same datagrams keep the pod's address:
				// the masquerading above is ours, not an artefact of the test network.
				cleanupIn(t, tn.node, m)
				for _, p := range paths {
					if got := sourceSeenBy(t, tn.pod, tn.out, p.outside); got != p.pod {
						t.Errorf("%s: after Cleanup, pod -> outside arrived from %s, want %s", p.family, got, p.pod)
					}
				}
			})
		}
	}
}
