package testbed

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/subnetenv"
)

// cniPods builds the flannel plugin and finds the reference plugins, or
// skips the test saying what is missing.
func cniPods(t *testing.T) *CNIPods {
	t.Helper()
	binDir := os.Getenv("FLANNELGO_CNI_BIN")
	if binDir == "" {
		binDir = DefaultCNIBinDir
	}
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join(binDir, p)); err != nil {
			unavailable(t, "needs the reference CNI plugins in %s (run scripts/install-cni-tools.sh %s): %v", binDir, binDir, err)
		}
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		unavailable(t, "needs iptables in PATH for the portmap plugin: %v", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	dir := t.TempDir()
	if out, err := exec.Command(goBin, "build", "-o", filepath.Join(dir, "flannel"), "../../../cmd/flannel").CombinedOutput(); err != nil {
		t.Fatalf("build the flannel CNI plugin: %v\n%s", err, out)
	}
	c := &CNIPods{PluginDir: dir, BinDir: binDir}
	if err := c.CheckBinaries(); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeEnv(t *testing.T, n *Node, subnet string, mtu int) {
	t.Helper()
	err := subnetenv.Write(n.SubnetFile, &subnetenv.Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:  netip.MustParsePrefix(subnet),
		MTU:     mtu,
		IPMasq:  true,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// defaultRoute returns the gateway and device of the namespace's IPv4
// default route.
func defaultRoute(t *testing.T, ns string) (netip.Addr, string) {
	t.Helper()
	var gw netip.Addr
	var dev string
	err := WithHandle(ns, func(h *netlink.Handle) error {
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
				continue
			}
			gw, _ = netip.AddrFromSlice(r.Gw.To4())
			l, err := h.LinkByIndex(r.LinkIndex)
			if err != nil {
				return err
			}
			dev = l.Attrs().Name
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return gw, dev
}

// allocations lists host-local's address files for the node.
func allocations(t *testing.T, n *Node) []string {
	t.Helper()
	ents, err := os.ReadDir(HostLocalDir(n))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestCNIPods(t *testing.T) {
	needRoot(t)
	pods := cniPods(t)
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tlcni", Nodes: 2})
	tb.PodNetworker = pods
	n1, n2 := tb.Nodes[0], tb.Nodes[1]
	writeEnv(t, n1, "10.244.1.1/24", 1450)
	writeEnv(t, n2, "10.244.2.1/24", 1400)

	p1, err := tb.AddPod(ctx, n1)
	if err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	p2, err := tb.AddPod(ctx, n1)
	if err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	p3, err := tb.AddPod(ctx, n2)
	if err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	sub1 := netip.MustParsePrefix("10.244.1.0/24")
	for _, p := range []*Pod{p1, p2} {
		if !sub1.Contains(p.IP) || p.IP == netip.MustParseAddr("10.244.1.1") {
			t.Errorf("%s got %s, want an address in %s other than the gateway", p.Name, p.IP, sub1)
		}
		if mtu := linkMTU(t, p.NS, "eth0"); mtu != 1450 {
			t.Errorf("%s eth0 MTU %d, want FLANNEL_MTU 1450", p.Name, mtu)
		}
		if gw, dev := defaultRoute(t, p.NS); gw != netip.MustParseAddr("10.244.1.1") || dev != "eth0" {
			t.Errorf("%s default route via %s dev %s, want via 10.244.1.1 (cni0) dev eth0", p.Name, gw, dev)
		}
	}
	if p1.IP == p2.IP {
		t.Errorf("two pods got %s", p1.IP)
	}
	if !netip.MustParsePrefix("10.244.2.0/24").Contains(p3.IP) {
		t.Errorf("%s got %s, want 10.244.2.0/24", p3.Name, p3.IP)
	}
	if mtu := linkMTU(t, p3.NS, "eth0"); mtu != 1400 {
		t.Errorf("%s eth0 MTU %d, want FLANNEL_MTU 1400", p3.Name, mtu)
	}
	if mtu := linkMTU(t, n1.NS, Bridge); mtu != 1450 {
		t.Errorf("cni0 MTU %d, want 1450", mtu)
	}
	// The bridge is the gateway, and hairpin-capable pods reach each other.
	mustPing(t, ctx, p1.NS, netip.MustParseAddr("10.244.1.1"))
	mustPing(t, ctx, p1.NS, p2.IP)
	data, err := os.ReadFile(ConflistPath(n1))
	if err != nil || !strings.Contains(string(data), `"portmap"`) || !strings.Contains(string(data), `"isDefaultGateway": true`) {
		t.Errorf("conflist %s: %v\n%s", ConflistPath(n1), err, data)
	}

	if got := allocations(t, n1); len(got) != 2 {
		t.Errorf("host-local allocations on n1 %v, want 2", got)
	}
	for _, p := range []*Pod{p1, p2} {
		if err := tb.RemovePod(ctx, p); err != nil {
			t.Fatalf("RemovePod: %v", err)
		}
	}
	if got := allocations(t, n1); len(got) != 0 {
		t.Errorf("host-local allocations left after DEL: %v", got)
	}
}

func TestCNIPodsCycles(t *testing.T) {
	needRoot(t)
	pods := cniPods(t)
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tlcyc", Nodes: 1})
	tb.PodNetworker = pods
	n := tb.Nodes[0]
	writeEnv(t, n, "10.244.3.1/24", 1450)
	for i := range 20 {
		p, err := tb.AddPod(ctx, n)
		if err != nil {
			t.Fatalf("cycle %d: AddPod: %v", i, err)
		}
		if !netip.MustParsePrefix("10.244.3.0/24").Contains(p.IP) {
			t.Fatalf("cycle %d: %s got %s", i, p.Name, p.IP)
		}
		if err := tb.RemovePod(ctx, p); err != nil {
			t.Fatalf("cycle %d: RemovePod: %v", i, err)
		}
	}
	if got := allocations(t, n); len(got) != 0 {
		t.Errorf("host-local allocations left after 20 ADD/DEL cycles: %v", got)
	}
	var veths []string
	err := WithHandle(n.NS, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		for _, l := range links {
			if l.Type() == "veth" && l.Attrs().Name != n.Iface {
				veths = append(veths, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(veths) != 0 {
		t.Errorf("pod veths left on the node after DEL: %v", veths)
	}
	ents, _ := os.ReadDir(filepath.Join(CNIDir(n), "flannel"))
	if len(ents) != 0 {
		t.Errorf("flannel plugin state left after DEL: %d files", len(ents))
	}
}

func TestCNIPodsPodMTU(t *testing.T) {
	needRoot(t)
	pods := cniPods(t)
	pods.PodMTU = 1500
	ctx := testCtx(t)
	tb := newTestbed(t, Options{Name: "tlcmt", Nodes: 1})
	tb.PodNetworker = pods
	n := tb.Nodes[0]
	writeEnv(t, n, "10.244.4.1/24", 1450)
	p, err := tb.AddPod(ctx, n)
	if err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	if mtu := linkMTU(t, p.NS, "eth0"); mtu != 1500 {
		t.Errorf("eth0 MTU %d, want the pod MTU override 1500", mtu)
	}
}

func TestCNIPodsMissingPlugin(t *testing.T) {
	c := &CNIPods{PluginDir: t.TempDir(), BinDir: t.TempDir()}
	err := c.CheckBinaries()
	if err == nil || !strings.Contains(err.Error(), "install-cni-tools.sh") || !strings.Contains(err.Error(), "flannel") {
		t.Fatalf("CheckBinaries with nothing installed: %v", err)
	}
}
