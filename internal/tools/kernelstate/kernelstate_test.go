package kernelstate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// newNS makes a namespace with a VXLAN device programmed for one peer the
// way flanneld does (route, permanent neighbour, FDB entry), plus a stale
// FDB entry, and removes it when the test ends.
func newNS(t *testing.T) string {
	t.Helper()
	tbtest.NeedRoot(t, "ip", "bridge")
	ns := tbtest.NS(t, fmt.Sprintf("fl-ks-%d", os.Getpid()))
	run := func(argv ...string) {
		t.Helper()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	for _, c := range [][]string{
		{"link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"},
		{"addr", "add", "198.51.100.11/24", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "198.51.100.11", "dev", "eth0", "dstport", "8472", "nolearning"},
		{"link", "set", "flannel.1", "mtu", "1450", "up"},
		{"addr", "add", "10.244.1.0/32", "dev", "flannel.1"},
		{"route", "add", "10.244.2.0/24", "via", "10.244.2.0", "dev", "flannel.1", "onlink"},
		{"neigh", "add", "10.244.2.0", "lladdr", "ae:00:00:00:00:02", "dev", "flannel.1", "nud", "permanent"},
	} {
		run(append([]string{"ip", "-n", ns}, c...)...)
	}
	run("bridge", "-n", ns, "fdb", "append", "ae:00:00:00:00:02", "dev", "flannel.1", "dst", "198.51.100.12", "self", "permanent")
	run("bridge", "-n", ns, "fdb", "append", "ae:00:00:00:00:99", "dev", "flannel.1", "dst", "198.51.100.99", "self", "permanent")
	return ns
}

func TestReadsWhatFlannelProgrammed(t *testing.T) {
	ns := newNS(t)
	r, err := Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := r.Device("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != "vxlan" || d.MTU != 1450 || d.VNI != 1 || !d.Up || len(d.Addrs) == 0 || d.Addrs[0] != netip.MustParsePrefix("10.244.1.0/32") {
		t.Errorf("device %+v", d)
	}
	if _, err := r.Device("cni0"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("missing cni0: %v, want ErrNoDevice", err)
	}
	subnet, pub := netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddr("198.51.100.12")
	p, err := r.VXLANPeer("flannel.1", subnet, pub)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Route.String(); got != "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink" {
		t.Errorf("route %q", got)
	}
	if got := p.Neighbour.String(); got != "10.244.2.0 lladdr ae:00:00:00:00:02 PERMANENT" {
		t.Errorf("neighbour %q", got)
	}
	mac, _ := net.ParseMAC("ae:00:00:00:00:02")
	if !p.RouteOK() || !p.NeighOK(mac) || !p.FDBOK(mac) || len(p.Problems("flannel.1", mac)) != 0 {
		t.Errorf("peer as flannel programs it judged wrong: %v", p.Problems("flannel.1", mac))
	}
	// The lease says another MAC: neighbour and FDB are wrong, the route is not.
	other, _ := net.ParseMAC("ae:00:00:00:00:03")
	probs := p.Problems("flannel.1", other)
	if len(probs) != 2 || !strings.Contains(probs[0], "want 10.244.2.0 lladdr ae:00:00:00:00:03 PERMANENT") ||
		!strings.Contains(probs[1], "no FDB entry ae:00:00:00:00:03 dst 198.51.100.12 dev flannel.1") {
		t.Errorf("problems for a changed VtepMAC: %q", probs)
	}
	// A peer with nothing programmed.
	none, _ := r.VXLANPeer("flannel.1", netip.MustParsePrefix("10.244.3.0/24"), netip.MustParseAddr("198.51.100.13"))
	if none.Route != nil || none.Neighbour != nil || len(none.FDB) != 0 || len(none.Problems("flannel.1", other)) != 3 {
		t.Errorf("unprogrammed peer: %+v", none)
	}
	fdb, err := r.FDB(d.Index)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, f := range fdb {
		lines = append(lines, f.String())
	}
	want := "ae:00:00:00:00:99 dst 198.51.100.99 dev flannel.1 permanent"
	if !strings.Contains("\n"+strings.Join(lines, "\n")+"\n", "\n"+want+"\n") || len(fdb) != 2 {
		t.Errorf("FDB %q, want two entries with %q", lines, want)
	}
	rt, err := r.RouteGet(netip.MustParseAddr("10.244.2.7"))
	if err != nil || rt.Dev != "flannel.1" || rt.Gw != netip.MustParseAddr("10.244.2.0") {
		t.Errorf("route get 10.244.2.7: %v %v", rt, err)
	}
}
