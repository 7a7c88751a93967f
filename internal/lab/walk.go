package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelgo/flannel/internal/kernelstate"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/testbed"
)

// step is one kernel object a packet uses on its way, and whether it is
// what flannel should have programmed.
type step struct {
	hop, kind, seen string
	want            string // empty when it matches
}

// walker looks up, hop by hop, the route, neighbour and FDB entries the
// kernel uses for a packet from src to dst.
type walker struct {
	src, dst *testbed.Pod
	dstLease lease.Attrs
	dstNet   netip.Prefix // dst node's subnet
	srcEnvGW netip.Addr   // src node's bridge address (pod gateway)
	steps    []step
}

func (w *walker) add(hop, kind, seen, want string) {
	w.steps = append(w.steps, step{hop: hop, kind: kind, seen: seen, want: want})
}

// walk traces one cross-node pod pair, preferring one that crosses the
// router when there are two segments.
func (c *checker) walk(ctx context.Context) {
	src, dst := c.walkPair()
	if src == nil {
		fmt.Fprintln(c.out, "\npacket walk: no pod pair on different nodes to trace")
		return
	}
	// Fresh neighbour entries for the trace.
	_ = ping(ctx, src.NS, dst.IP, 56, false)
	w := &walker{src: src, dst: dst}
	if env := c.envs[src.Node.Name]; env != nil {
		w.srcEnvGW = env.Subnet.Addr()
	}
	leases, err := c.leases(ctx)
	if err != nil {
		c.fail("packet walk", fmt.Sprintf("cannot read the leases: %v", err))
		return
	}
	for p, a := range leases {
		if p.Contains(dst.IP) {
			w.dstNet, w.dstLease = p, a
		}
	}
	if !w.dstNet.IsValid() {
		c.fail("packet walk", fmt.Sprintf("no lease covers %s (%s's subnet)", dst.IP, dst.Node.Name))
		return
	}
	fmt.Fprintf(c.out, "\npacket walk %s (%s) -> %s (%s); %s's lease %s: PublicIP %s, backend %s%s\n",
		src.Name, src.IP, dst.Name, dst.IP, dst.Node.Name, w.dstNet, w.dstLease.PublicIP, w.dstLease.BackendType, backendData(w.dstLease))
	for _, hop := range []func() error{w.podHop, func() error { return w.srcNodeHop(c.spec.Backend) }, w.dstNodeHop} {
		if err := hop(); err != nil {
			w.add("walk", "error", err.Error(), "kernel state that can be read")
		}
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	for _, s := range w.steps {
		verdict := "ok"
		if s.want != "" {
			verdict = "MISMATCH, want " + s.want
			c.fail(fmt.Sprintf("walk %s: %s", s.hop, s.kind), fmt.Sprintf("kernel has %s; want %s", s.seen, s.want))
		} else {
			c.pass()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.hop, s.kind, s.seen, verdict)
	}
	_ = tw.Flush()
}

func backendData(a lease.Attrs) string {
	if len(a.BackendData) == 0 || string(a.BackendData) == "null" {
		return ""
	}
	return " " + string(a.BackendData)
}

func (c *checker) walkPair() (*testbed.Pod, *testbed.Pod) {
	var best [2]*testbed.Pod
	for _, s := range c.pods {
		for _, d := range c.pods {
			if s.Node == d.Node {
				continue
			}
			if best[0] == nil || (s.Node.Segment != d.Node.Segment && best[0].Node.Segment == best[1].Node.Segment) {
				best = [2]*testbed.Pod{s, d}
			}
		}
	}
	return best[0], best[1]
}

// podHop: the pod's route to dst and the neighbour entry of its gateway,
// which must be the node's bridge.
func (w *walker) podHop() error {
	hop := "pod " + w.src.Name
	return kernelstate.With(w.src.NS, func(k *kernelstate.Reader) error {
		r, ok := w.route(k, hop, "route", w.dst.IP)
		if !ok {
			return nil
		}
		want := ""
		if r.Gw != w.srcEnvGW || r.Dev != "eth0" {
			want = fmt.Sprintf("via %s (cni0 on %s) dev eth0", w.srcEnvGW, w.src.Node.Name)
		}
		w.add(hop, "route", describeRoute(w.dst.IP, r), want)
		brMAC, _ := linkMAC(w.src.Node.NS, testbed.Bridge)
		w.neighbour(k, hop, r.LinkIndex, r.Gw, brMAC, "cni0 on "+w.src.Node.Name)
		return nil
	})
}

// srcNodeHop: the node's route into the overlay (vxlan: flannel.N, its
// neighbour entry holding the peer's VTEP MAC, the FDB entry sending that
// MAC to the peer's public IP) or straight to the peer (host-gw).
func (w *walker) srcNodeHop(backend string) error {
	hop := "node " + w.src.Node.Name
	return kernelstate.With(w.src.Node.NS, func(k *kernelstate.Reader) error {
		r, ok := w.route(k, hop, "route", w.dst.IP)
		if !ok {
			return nil
		}
		seen := describeRoute(w.dst.IP, r)
		switch backend {
		case "vxlan":
			return w.vxlanHop(k, hop, r, seen)
		case "host-gw":
			want := ""
			if r.Gw != w.dstLease.PublicIP || r.Dev != w.src.Node.Iface {
				want = fmt.Sprintf("via %s (PublicIP of %s) dev %s", w.dstLease.PublicIP, w.dst.Node.Name, w.src.Node.Iface)
			}
			w.add(hop, "route", seen, want)
			peerMAC, _ := linkMAC(w.dst.Node.NS, w.dst.Node.Iface)
			w.neighbour(k, hop, r.LinkIndex, r.Gw, peerMAC, w.dst.Node.Name+" eth0")
		case "udp", "wireguard":
			// The device picks the peer; the kernel only routes into it.
			want := ""
			if dev := tunnelDevice(backend); r.Dev != dev || r.Gw.IsValid() {
				want = "dev " + dev + " (the network's route into the " + backend + " device)"
			}
			w.add(hop, "route", seen, want)
		default:
			w.add(hop, "route", seen+" (backend "+backend+" not judged)", "")
		}
		return nil
	})
}

type vxlanData struct {
	VNI     int
	VtepMAC string
}

func (w *walker) vxlanHop(k *kernelstate.Reader, hop string, r kernelstate.Route, seen string) error {
	var bd vxlanData
	if err := json.Unmarshal(w.dstLease.BackendData, &bd); err != nil {
		return fmt.Errorf("decode %s's vxlan BackendData %s: %w", w.dst.Node.Name, w.dstLease.BackendData, err)
	}
	vtep, err := net.ParseMAC(bd.VtepMAC)
	if err != nil {
		return fmt.Errorf("%s's VtepMAC %q: %w", w.dst.Node.Name, bd.VtepMAC, err)
	}
	wantDev := fmt.Sprintf("flannel.%d", bd.VNI)
	want := ""
	if r.Dev != wantDev || r.Gw != w.dstNet.Addr() {
		want = fmt.Sprintf("via %s dev %s onlink", w.dstNet.Addr(), wantDev)
	}
	w.add(hop, "route", seen, want)
	w.neighbour(k, hop, r.LinkIndex, r.Gw, vtep, "VtepMAC of "+w.dst.Node.Name)

	fdb, err := k.FDB(r.LinkIndex)
	if err != nil {
		return err
	}
	fdbSeen, fdbDst := "no FDB entry for "+vtep.String(), netip.Addr{}
	for _, f := range fdb {
		if f.MAC.String() == vtep.String() {
			fdbDst, fdbSeen = f.Dst, f.String()
		}
	}
	want = ""
	if fdbDst != w.dstLease.PublicIP {
		want = fmt.Sprintf("%s dst %s (PublicIP of %s)", vtep, w.dstLease.PublicIP, w.dst.Node.Name)
	}
	w.add(hop, "fdb", fdbSeen, want)
	return w.underlayHop(k, hop)
}

// underlayHop: how the node reaches the peer's public IP: directly on one
// segment, through the router across two.
func (w *walker) underlayHop(k *kernelstate.Reader, hop string) error {
	pub := w.dstLease.PublicIP
	r, ok := w.route(k, hop, "underlay route", pub)
	if !ok {
		return nil
	}
	gw, dev := r.Gw, r.Dev
	seen := describeRoute(pub, r)
	want := ""
	sameSeg := w.src.Node.Segment == w.dst.Node.Segment
	switch {
	case dev != w.src.Node.Iface:
		want = "out of " + w.src.Node.Iface
	case sameSeg && gw.IsValid():
		want = fmt.Sprintf("%s directly on %s (same segment)", pub, w.src.Node.Iface)
	case !sameSeg && !testbed.SegmentPrefix(w.src.Node.Segment, false).Contains(gw):
		want = fmt.Sprintf("via the router on segment %d", w.src.Node.Segment)
	}
	w.add(hop, "underlay route", seen, want)
	next, label := pub, w.dst.Node.Name+" eth0"
	var wantMAC net.HardwareAddr
	if gw.IsValid() {
		next, label = gw, "router"
	} else {
		wantMAC, _ = linkMAC(w.dst.Node.NS, w.dst.Node.Iface)
	}
	w.neighbour(k, hop, r.LinkIndex, next, wantMAC, label)
	return nil
}

// dstNodeHop: the peer node delivers to the pod on its bridge.
func (w *walker) dstNodeHop() error {
	hop := "node " + w.dst.Node.Name
	return kernelstate.With(w.dst.Node.NS, func(k *kernelstate.Reader) error {
		r, ok := w.route(k, hop, "route", w.dst.IP)
		if !ok {
			return nil
		}
		want := ""
		if r.Dev != testbed.Bridge || r.Gw.IsValid() {
			want = fmt.Sprintf("%s dev %s (connected)", w.dst.IP, testbed.Bridge)
		}
		w.add(hop, "route", describeRoute(w.dst.IP, r), want)
		podMAC, _ := linkMAC(w.dst.NS, "eth0")
		w.neighbour(k, hop, r.LinkIndex, w.dst.IP, podMAC, w.dst.Name+" eth0")
		return nil
	})
}

// neighbour records the neighbour entry for ip on link. A dynamic entry
// that is not cached is no error (the kernel resolves it on demand); a
// cached one must hold wantMAC when that is known.
func (w *walker) neighbour(k *kernelstate.Reader, hop string, link int, ip netip.Addr, wantMAC net.HardwareAddr, label string) {
	n, found, err := k.Neighbour(link, ip)
	switch {
	case err != nil:
		w.add(hop, "neighbour", err.Error(), "a readable neighbour table")
	case !found:
		w.add(hop, "neighbour", fmt.Sprintf("%s not cached (resolved on demand)", ip), "")
	default:
		want := ""
		if len(wantMAC) > 0 && n.MAC.String() != wantMAC.String() && n.Resolved() {
			want = fmt.Sprintf("lladdr %s (%s)", wantMAC, label)
		}
		w.add(hop, "neighbour", n.String(), want)
	}
}

// route looks up the kernel's route to dst; a missing one is a step that
// failed, and the hop ends there.
func (w *walker) route(k *kernelstate.Reader, hop, kind string, dst netip.Addr) (kernelstate.Route, bool) {
	r, err := k.RouteGet(dst)
	if err != nil {
		w.add(hop, kind, err.Error(), "a route to "+dst.String())
		return r, false
	}
	return r, true
}

// describeRoute renders the route the kernel picked for dst.
func describeRoute(dst netip.Addr, r kernelstate.Route) string {
	r.Dst = netip.Prefix{}
	return dst.String() + strings.TrimPrefix(r.String(), "default")
}

func linkMAC(ns, name string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		d, err := k.Device(name)
		if err != nil {
			return err
		}
		mac = d.MAC
		return nil
	})
	return mac, err
}

// readLeases returns every lease in etcd, by IPv4 subnet.
func readLeases(ctx context.Context, tb *testbed.Testbed) (map[netip.Prefix]lease.Attrs, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := tb.EtcdClient(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	prefix := testbed.DefaultEtcdPrefix + "/subnets/"
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("get %s*: %w (is the lab process running?)", prefix, err)
	}
	out := map[netip.Prefix]lease.Attrs{}
	for _, kv := range resp.Kvs {
		v4, _, err := lease.ParseKey(strings.TrimPrefix(string(kv.Key), prefix))
		if err != nil || !v4.IsValid() {
			continue
		}
		var a lease.Attrs
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			return nil, fmt.Errorf("lease %s: %w", kv.Key, err)
		}
		out[v4] = a
	}
	return out, nil
}
