package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/peerhealth"
)

// vtepMAC is a VXLAN lease's VtepMAC, or nil.
func vtepMAC(l lease.Lease) net.HardwareAddr {
	var d struct{ VtepMAC string }
	if json.Unmarshal(l.Attrs.BackendData, &d) != nil {
		return nil
	}
	mac, _ := net.ParseMAC(d.VtepMAC)
	return mac
}

// checkKernelState: every peer's route / neighbour / FDB entry (host-gw:
// route) is in place and points at the peer's current address, and no
// entry is left for a lease that is gone.
func (f *facts) checkKernelState(context.Context) Result {
	const name = "kernel state"
	if !f.leasesRead() || f.own == nil {
		return skip(name, "needs the leases and this node's lease (see datastore, subnet.env)")
	}
	var bad []string
	var err error
	switch f.cfg.BackendType {
	case "vxlan":
		bad, err = f.vxlanState()
	case "host-gw":
		bad, err = f.hostGWState()
	default:
		return skip(name, "backend "+f.cfg.BackendType+" has no kernel-state check")
	}
	if err != nil {
		return problem(name, "cannot read the kernel's tables", "restart flanneld, which re-creates its device", err.Error())
	}
	if len(bad) > 0 {
		return problem(name, fmt.Sprintf("%d kernel entries do not match the leases", len(bad)),
			"restart flanneld: at start-up it reconciles every route, neighbour and FDB entry with the leases (and removes stale ones); "+
				"or fix by hand with the ip/bridge commands shown", bad...)
	}
	return ok(name, fmt.Sprintf("%d peers programmed as their leases say, no stale entries", len(f.peers)))
}

func (f *facts) vxlanState() ([]string, error) {
	o, dev := f.vxlan()
	t, err := f.k.VXLAN(dev, false)
	if err != nil {
		return nil, err
	}
	var bad []string
	wantRoute, wantNeigh, wantFDB := map[netip.Prefix]bool{}, map[netip.Addr]bool{}, map[string]bool{}
	for _, l := range f.peers {
		mac := vtepMAC(l)
		if o.DirectRouting {
			if rt, _ := f.k.HostGWRoute(l.Subnet); rt != nil && rt.Gw == l.Attrs.PublicIP {
				continue // on the same segment: a plain route, no VXLAN
			}
		}
		wantRoute[l.Subnet], wantNeigh[l.Subnet.Addr()], wantFDB[mac.String()+" "+l.Attrs.PublicIP.String()] = true, true, true
		for _, p := range t.Peer(l.Subnet, l.Attrs.PublicIP).Problems(dev, mac) {
			bad = append(bad, "peer "+peerName(l)+": "+p)
		}
	}
	for _, r := range t.Routes {
		if r.Dst.IsValid() && f.cfg.Network.Overlaps(r.Dst) && !wantRoute[r.Dst] && r.Dst != f.own.Subnet {
			bad = append(bad, fmt.Sprintf("stale route %s (no lease): ip route del %s dev %s", r, r.Dst, dev))
		}
	}
	for _, n := range t.Neighs {
		if n.Permanent() && !wantNeigh[n.IP] {
			bad = append(bad, fmt.Sprintf("stale neighbour %s (no lease): ip neigh del %s dev %s", n, n.IP, dev))
		}
	}
	for _, e := range t.FDB {
		if e.Permanent && !wantFDB[e.MAC.String()+" "+e.Dst.String()] && e.MAC.String() != "00:00:00:00:00:00" {
			bad = append(bad, fmt.Sprintf("stale FDB entry %s (no lease has this VtepMAC at this address): bridge fdb del %s dev %s dst %s", e, e.MAC, dev, e.Dst))
		}
	}
	return bad, nil
}

func (f *facts) hostGWState() ([]string, error) {
	dev := f.local[f.own.Attrs.PublicIP]
	var bad []string
	want := map[netip.Prefix]bool{}
	for _, l := range f.peers {
		want[l.Subnet] = true
		rt, err := f.k.HostGWRoute(l.Subnet)
		if err != nil {
			return nil, err
		}
		if rt == nil || rt.Gw != l.Attrs.PublicIP || rt.Dev != dev {
			have := "none"
			if rt != nil {
				have = rt.String()
			}
			bad = append(bad, fmt.Sprintf("peer %s: route is %s, want %s via %s dev %s", peerName(l), have, l.Subnet, l.Attrs.PublicIP, dev))
		}
	}
	routes, err := f.k.Routes(dev, unix.AF_INET)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Dst.IsValid() && r.Gw.IsValid() && f.cfg.Network.Overlaps(r.Dst) && !want[r.Dst] {
			bad = append(bad, fmt.Sprintf("stale route %s (no lease): ip route del %s", r, r.Dst))
		}
	}
	return bad, nil
}

// needPeers stops a peer check that would judge nothing: without the
// leases, or with no other node's lease, "all peers pass" would be an ok
// made of no data.
func (f *facts) needPeers(name string) (Result, bool) {
	switch {
	case !f.leasesRead():
		return skip(name, "no leases were read (see datastore)"), true
	case len(f.peers) == 0:
		return skip(name, "no other node's lease, so no peer to probe"), true
	}
	return Result{}, false
}

// vagrantNAT is the address VirtualBox gives every VM's first (NAT) NIC.
var vagrantNAT = netip.MustParseAddr("10.0.2.15")

// checkPublicAddress: each lease has its own public address, and this
// node's is not the Vagrant NAT address that no other node can reach.
func (f *facts) checkPublicAddress(context.Context) Result {
	const name = "public address"
	if !f.leasesRead() || len(f.leases) == 0 {
		return skip(name, "no leases were read (see datastore)")
	}
	byAddr := map[netip.Addr][]string{}
	for _, l := range f.leases {
		if l.Attrs.PublicIP.IsValid() {
			byAddr[l.Attrs.PublicIP] = append(byAddr[l.Attrs.PublicIP], l.Key())
		}
	}
	var dups []string
	vagrant := false
	for a, keys := range byAddr {
		if len(keys) > 1 {
			sort.Strings(keys)
			dups = append(dups, fmt.Sprintf("PublicIP %s is advertised by %d leases: %s", a, len(keys), strings.Join(keys, ", ")))
			vagrant = vagrant || a == vagrantNAT
		}
	}
	sort.Strings(dups)
	if f.own != nil && f.own.Attrs.PublicIP == vagrantNAT {
		vagrant = true
		dups = append(dups, fmt.Sprintf("this node's PublicIP is %s on %s", vagrantNAT, f.local[vagrantNAT]))
	}
	if vagrant {
		return problem(name, "the Vagrant NAT pattern: flanneld chose 10.0.2.15, the NAT interface every VirtualBox VM has, which other nodes cannot reach",
			"tell flanneld which interface the nodes share: --iface=eth1 (or --iface-can-reach=<another node's IP>, or --public-ip), then restart it", dups...)
	}
	if len(dups) > 0 {
		return problem(name, "duplicate public address: traffic for one of the subnets goes to the wrong node",
			"give each node its own address with --iface, --iface-regex, --iface-can-reach or --public-ip, restart flanneld on the nodes concerned, and delete the lease the wrong node holds", dups...)
	}
	ev := ""
	if f.own != nil {
		ev = fmt.Sprintf("this node: %s on %s", f.own.Attrs.PublicIP, f.local[f.own.Attrs.PublicIP])
	}
	return ok(name, fmt.Sprintf("%d leases, each with its own public address", len(f.leases)), ev)
}

// peerProbe is one peer's probe results.
type peerProbe struct {
	l                 lease.Lease
	underlay, overlay bool
}

// probePeers pings every peer's public address and overlay address, up to
// 16 at a time.
func (f *facts) probePeers(ctx context.Context) []peerProbe {
	out := make([]peerProbe, len(f.peers))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, l := range f.peers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = peerProbe{l: l,
				underlay: f.pinger.Reachable(ctx, l.Attrs.PublicIP, 56, false, 3, f.timeout),
				overlay:  f.pinger.Reachable(ctx, peerhealth.Target(l), 56, false, 3, f.timeout)}
		})
	}
	wg.Wait()
	return out
}

// checkReachability: each peer answers on the underlay (its public
// address) and through the backend (its overlay address). Underlay yes but
// overlay no is the classic blocked VXLAN port.
func (f *facts) checkReachability(ctx context.Context) Result {
	const name = "peer reachability"
	if r, stop := f.needPeers(name); stop {
		return r
	}
	if f.pinger == nil {
		return problem(name, "cannot send ICMP probes", "run flannelctl doctor as root (it needs CAP_NET_RAW)")
	}
	port := f.encapPort()
	var bad, fine, fixes []string
	underlayFix, portFix := false, false
	for _, p := range f.probePeers(ctx) {
		pub, target := p.l.Attrs.PublicIP, peerhealth.Target(p.l)
		switch {
		case p.overlay && p.underlay:
			fine = append(fine, fmt.Sprintf("%s: underlay and overlay (%s) answer", peerName(p.l), target))
		case p.overlay:
			fine = append(fine, fmt.Sprintf("%s: overlay answers; ICMP to %s on the underlay does not (filtered?)", peerName(p.l), pub))
		case !p.underlay:
			underlayFix = true
			bad = append(bad, fmt.Sprintf("peer %s: its PublicIP %s does not answer from this node: an address the others cannot reach (wrong --iface/--public-ip on that node, or no route/firewall between the nodes)", peerName(p.l), pub))
		case port != "":
			portFix = true
			bad = append(bad, fmt.Sprintf("peer %s: %s answers on the underlay but its overlay address %s does not: %s between this node and %s is blocked", peerName(p.l), pub, target, port, pub))
		default:
			bad = append(bad, fmt.Sprintf("peer %s: %s answers but its overlay address %s does not", peerName(p.l), pub, target))
		}
	}
	if len(bad) == 0 {
		return ok(name, fmt.Sprintf("all %d peers reachable over the underlay and the overlay", len(f.peers)), fine...)
	}
	if underlayFix {
		fixes = append(fixes, "on each node named, make flanneld advertise an address the other nodes reach (--iface, --iface-can-reach or --public-ip; delete its stale lease) and check routing and firewalls between the nodes")
	}
	if portFix {
		fixes = append(fixes, fmt.Sprintf("allow %s in both directions between the nodes named (host firewall: iptables/nft rules, cloud security groups); check with: tcpdump -ni any %s", port, tcpdumpFilter(port)))
	}
	if len(fixes) == 0 {
		fixes = append(fixes, "check the backend on the nodes named: restart flanneld there and read its log")
	}
	return problem(name, fmt.Sprintf("%d of %d peers unreachable", len(bad), len(f.peers)), strings.Join(fixes, "; "), append(bad, fine...)...)
}

// encapPort is the backend's data-plane port, as an operator writes it.
func (f *facts) encapPort() string {
	if f.cfg == nil {
		return ""
	}
	switch f.cfg.BackendType {
	case "vxlan":
		o, _ := f.vxlan()
		if o.Port == 0 {
			o.Port = 8472
		}
		return fmt.Sprintf("UDP %d (VXLAN)", o.Port)
	case "udp":
		return "UDP 8285 (udp backend)"
	case "wireguard":
		return "UDP 51820 (WireGuard)"
	case "ipip":
		return "IP protocol 4 (IPIP)"
	case "ipsec":
		return "UDP 500/4500 and ESP (IPsec)"
	}
	return ""
}

// tcpdumpFilter is how to watch the backend's traffic for the fix text.
func tcpdumpFilter(port string) string {
	switch {
	case strings.HasPrefix(port, "UDP 500/"):
		return "udp port 500 or udp port 4500 or esp"
	case strings.HasPrefix(port, "UDP "):
		return "udp port " + strings.Fields(port)[1]
	case strings.HasPrefix(port, "IP protocol 4"):
		return "ip proto 4"
	}
	return "host <peer>"
}

// overhead is what the backend's encapsulation adds to each packet.
func (f *facts) overhead() int {
	switch f.cfg.BackendType {
	case "vxlan":
		return 50
	case "udp":
		return 28
	case "wireguard":
		return 80
	case "ipip":
		return 20
	}
	return 0
}

// checkPathMTU: a full-size pod packet (FLANNEL_MTU) fits through the
// overlay to every peer, and the underlay carries FLANNEL_MTU plus the
// encapsulation, measured with don't-fragment probes.
func (f *facts) checkPathMTU(ctx context.Context) Result {
	const name = "path MTU"
	if f.pinger == nil || f.env == nil || f.cfg == nil {
		return skip(name, "needs ICMP probes, subnet.env and the config (see above)")
	}
	if r, stop := f.needPeers(name); stop {
		return r
	}
	need := f.env.MTU + f.overhead()
	var bad, fine []string
	for _, l := range f.peers {
		pub := l.Attrs.PublicIP
		if !f.pinger.Reachable(ctx, pub, 56, false, 2, f.timeout) {
			continue // reported by the reachability check
		}
		if f.pinger.Reachable(ctx, pub, need-28, true, 2, f.timeout) {
			fine = append(fine, fmt.Sprintf("%s: %d-byte DF packets pass the underlay", peerName(l), need))
			continue
		}
		largest := f.largestDF(ctx, pub, need)
		bad = append(bad, fmt.Sprintf("peer %s: the underlay path carries at most %d bytes (DF probes: %d ok, %d lost); FLANNEL_MTU=%d needs %d (MTU + %d encapsulation)",
			peerName(l), largest, largest, largest+1, f.env.MTU, need, f.overhead()))
	}
	if len(bad) == 0 && len(fine) == 0 {
		return skip(name, "no peer answered on the underlay, so nothing was measured (see peer reachability)")
	}
	if len(bad) > 0 {
		return problem(name, "the path MTU to some peers is smaller than FLANNEL_MTU needs: large pod packets are dropped (small pings work, big transfers hang)",
			"make the underlay carry the full size (same MTU on every node's interface and on the links between them), or set the Backend \"MTU\" in net-conf.json to the smallest path MTU and restart flanneld on every node", append(bad, fine...)...)
	}
	return ok(name, fmt.Sprintf("FLANNEL_MTU=%d fits the path to every reachable peer (%d bytes with encapsulation)", f.env.MTU, need), fine...)
}

// largestDF finds the largest IP packet (bytes) below limit that reaches
// dst with don't-fragment set.
func (f *facts) largestDF(ctx context.Context, dst netip.Addr, limit int) int {
	lo, hi := 68, limit-1 // lo passes (assumed), limit fails
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if f.pinger.Reachable(ctx, dst, mid-28, true, 2, 300*time.Millisecond) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// checkExhaustion: leased / available subnets; above 80 % a warning.
func (f *facts) checkExhaustion(context.Context) Result {
	const name = "subnet usage"
	if !f.leasesRead() {
		return skip(name, "no leases were read (see datastore)")
	}
	total := f.cfg.SubnetCount()
	used := len(f.leases)
	if total == 0 {
		return ok(name, "no IPv4 subnets configured")
	}
	pct := 100 * float64(used) / float64(total)
	summary := fmt.Sprintf("%d of %d subnets of %s leased (%.0f %%)", used, total, f.cfg.Network, pct)
	if pct > 80 {
		return Result{Check: name, Status: Warning, Summary: summary + ": the network is running out of subnets; new nodes will fail to join when it is full",
			Fix: "enlarge Network (or lower SubnetLen to get more, smaller subnets) in the network config before adding nodes; delete leases of nodes that are gone"}
	}
	return ok(name, summary)
}
