package antispoof

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// bed is a node namespace with cni0 and pods a, b, c on it, as the
// bridge plugin wires them.
type bed struct {
	t    testing.TB
	node string
	pods map[string]*bedPod
	dir  string
}

type bedPod struct {
	ns, veth string
	mac      net.HardwareAddr
	ip4, ip6 netip.Addr
}

func (p *bedPod) pod(name string) Pod {
	return Pod{ContainerID: p.ns, Namespace: "x", Name: name, Bridge: "cni0", HostIf: p.veth,
		MAC: p.mac.String(), IPs: []netip.Addr{p.ip4, p.ip6}}
}

func sh(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s: %v %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newBed(t testing.TB) *bed {
	tbtest.NeedRoot(t, "ip", "nft", "ping")
	tbtest.NeedRangesFree(t)
	pfx := fmt.Sprintf("fl-asp%d", os.Getpid()%100000)
	b := &bed{t: t, node: tbtest.NS(t, pfx+"-n"), pods: map[string]*bedPod{}, dir: t.TempDir()}
	sh(t, b.node, "ip", "link", "add", "cni0", "type", "bridge")
	sh(t, b.node, "ip", "addr", "add", "10.244.1.1/24", "dev", "cni0")
	sh(t, b.node, "ip", "addr", "add", "fd00:10:244:1::1/64", "dev", "cni0", "nodad")
	sh(t, b.node, "ip", "link", "set", "cni0", "up")
	for i, name := range []string{"a", "b", "c"} {
		p := &bedPod{ns: tbtest.NS(t, pfx+"-"+name), veth: "vethasp" + name,
			ip4: netip.AddrFrom4([4]byte{10, 244, 1, byte(10 + i)}),
			ip6: netip.MustParseAddr(fmt.Sprintf("fd00:10:244:1::%x", 10+i))}
		sh(t, b.node, "ip", "link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		sh(t, b.node, "ip", "link", "set", p.veth, "master", "cni0", "up")
		sh(t, p.ns, "ip", "addr", "add", p.ip4.String()+"/24", "dev", "eth0")
		sh(t, p.ns, "ip", "addr", "add", p.ip6.String()+"/64", "dev", "eth0", "nodad")
		sh(t, p.ns, "ip", "link", "set", "eth0", "up")
		if err := testbed.InNamespace(p.ns, func() error {
			l, err := netlink.LinkByName("eth0")
			if err == nil {
				p.mac = l.Attrs().HardwareAddr
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		b.pods[name] = p
	}
	return b
}

// sync writes records of the named pods and syncs the node's table.
func (b *bed) sync(pinned ...string) *Table {
	b.t.Helper()
	for _, name := range pinned {
		if err := WriteRecord(b.dir, b.pods[name].pod(name)); err != nil {
			b.t.Fatal(err)
		}
	}
	var tbl *Table
	err := testbed.InNamespace(b.node, func() error {
		var err error
		if tbl, err = NewTable(); err != nil {
			return err
		}
		return NewController(Options{RecordDir: b.dir}, tbl).Sync(context.Background())
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return tbl
}

func (b *bed) drops(tbl *Table) map[string]uint64 {
	b.t.Helper()
	var d map[string]uint64
	if err := testbed.InNamespace(b.node, func() error {
		var err error
		d, err = tbl.Drops(context.Background())
		return err
	}); err != nil {
		b.t.Fatal(err)
	}
	return d
}

func (b *bed) unpinned(tbl *Table) []string {
	b.t.Helper()
	var ports []string
	if err := testbed.InNamespace(b.node, func() error {
		var err error
		var present bool
		ports, present, err = tbl.Unpinned(context.Background())
		if err == nil && !present {
			err = fmt.Errorf("Unpinned found no table")
		}
		return err
	}); err != nil {
		b.t.Fatal(err)
	}
	return ports
}

// ping reports whether an echo from src (an address of from's) to dst is
// answered; the pod's neighbour entries are flushed first, so an entry
// left incomplete by an earlier, dropped attempt cannot delay it.
func (b *bed) ping(from string, src, dst netip.Addr) bool {
	ns := b.pods[from].ns
	sh(b.t, ns, "ip", "neigh", "flush", "dev", "eth0")
	return exec.Command("ip", "netns", "exec", ns, "ping", "-c1", "-W2", "-I", src.String(), dst.String()).Run() == nil
}

// own is p's own address of dst's family.
func (p *bedPod) own(dst netip.Addr) netip.Addr {
	if dst.Is4() {
		return p.ip4
	}
	return p.ip6
}

// neighMAC is the node's neighbour entry for ip on cni0.
func (b *bed) neighMAC(ip netip.Addr) string {
	out := sh(b.t, b.node, "ip", "neigh", "show", ip.String(), "dev", "cni0")
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// poison has pod a claim b's addresses (ARP and neighbour advertisement)
// after the node has learnt b's real MAC, and reports the node's entries
// for b afterwards.
func (b *bed) poison() (mac4, mac6 string) {
	a, v := b.pods["a"], b.pods["b"]
	sh(b.t, b.node, "ip", "neigh", "flush", "dev", "cni0")
	sh(b.t, b.node, "ping", "-c1", "-W1", v.ip4.String())
	sh(b.t, b.node, "ping", "-c1", "-W1", v.ip6.String())
	// The kernel keeps a fresh entry for its locktime (1 s) against
	// competing answers.
	time.Sleep(1100 * time.Millisecond)
	if err := testbed.InNamespace(a.ns, func() error {
		if err := sendFrame("eth0", arpReply(a.mac, v.ip4)); err != nil {
			return err
		}
		return sendFrame("eth0", neighborAdvert(a.mac, a.ip6, v.ip6))
	}); err != nil {
		b.t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	return b.neighMAC(v.ip4), b.neighMAC(v.ip6)
}

// A pod sends from its own addresses only: forged sources (an unused
// address of the subnet, another pod's), another pod's MAC, and ARP or
// neighbour advertisements for another pod's address are dropped and
// counted; a port with no record is cut off until it has one. Each attack
// is first shown to work without the table, so the test can fail.
func TestPinning(t *testing.T) {
	b := newBed(t)
	a, v := b.pods["a"], b.pods["b"]
	unused4, unused6 := netip.MustParseAddr("10.244.1.200"), netip.MustParseAddr("fd00:10:244:1::c8")
	sh(t, a.ns, "ip", "addr", "add", unused4.String()+"/32", "dev", "eth0")
	sh(t, a.ns, "ip", "addr", "add", unused6.String()+"/128", "dev", "eth0", "nodad")
	forged := map[string]netip.Addr{"unused v4": unused4, "unused v6": unused6}

	t.Run("without the table the attacks work", func(t *testing.T) {
		for what, src := range forged {
			dst := v.ip4
			if src.Is6() {
				dst = v.ip6
			}
			if !b.ping("a", src, dst) {
				t.Errorf("%s: a's forged echo from %s to %s got no answer even without the table", what, src, dst)
			}
		}
		if mac4, mac6 := b.poison(); mac4 != a.mac.String() || mac6 != a.mac.String() {
			t.Errorf("without the table a's ARP and NA should have taken b's entries: node has %s for %s, %s for %s", mac4, v.ip4, mac6, v.ip6)
		}
	})

	tbl := b.sync("a", "b")
	defer func() {
		if t.Failed() {
			t.Logf("table:\n%s", sh(t, b.node, "nft", "list", "table", "bridge", TableName))
		}
	}()
	t.Run("own addresses pass", func(t *testing.T) {
		for _, dst := range []netip.Addr{v.ip4, v.ip6, netip.MustParseAddr("10.244.1.1")} {
			if !b.ping("a", a.own(dst), dst) {
				t.Errorf("a cannot reach %s from its own address", dst)
			}
		}
	})
	t.Run("forged sources dropped", func(t *testing.T) {
		before := b.drops(tbl)[a.veth]
		for what, src := range forged {
			for _, dst := range []netip.Addr{v.ip4, v.ip6, netip.MustParseAddr("10.244.1.1")} {
				if src.Is4() == dst.Is4() && b.ping("a", src, dst) {
					t.Errorf("%s: a's echo from %s reached %s", what, src, dst)
				}
			}
		}
		if after := b.drops(tbl)[a.veth]; after <= before {
			t.Errorf("drop counter of %s: %d before, %d after the forged echoes", a.veth, before, after)
		}
	})
	t.Run("ARP and NA for another pod's address dropped", func(t *testing.T) {
		if mac4, mac6 := b.poison(); mac4 != v.mac.String() || mac6 != v.mac.String() {
			t.Errorf("a took b's neighbour entries: node has %s for %s, %s for %s (b is %s)", mac4, v.ip4, mac6, v.ip6, v.mac)
		}
	})
	t.Run("another MAC dropped", func(t *testing.T) {
		sh(t, a.ns, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:aa")
		defer sh(t, a.ns, "ip", "link", "set", "eth0", "address", a.mac.String())
		if b.ping("a", a.ip4, v.ip4) {
			t.Error("a reached b from its own address with a MAC not its own")
		}
	})
	t.Run("port without a record cut off until it has one", func(t *testing.T) {
		c := b.pods["c"]
		if b.ping("c", c.ip4, v.ip4) {
			t.Error("c, which has no record, reached b")
		}
		if got := b.unpinned(tbl); len(got) != 1 || got[0] != c.veth {
			t.Errorf("Unpinned = %v, want [%s]", got, c.veth)
		}
		b.sync("c")
		if got := b.unpinned(tbl); len(got) != 0 {
			t.Errorf("Unpinned after c's record = %v, want none", got)
		}
		if !b.ping("c", c.ip4, v.ip4) {
			t.Error("c cannot reach b once it has a record")
		}
	})
	t.Run("a gone port's entries removed", func(t *testing.T) {
		sh(t, b.node, "ip", "link", "del", v.veth)
		b.sync()
		out := sh(t, b.node, "nft", "list", "table", "bridge", TableName)
		if strings.Contains(out, v.veth) {
			t.Errorf("table still names %s after its veth went:\n%s", v.veth, out)
		}
		if !strings.Contains(out, a.veth) {
			t.Errorf("table lost %s:\n%s", a.veth, out)
		}
	})
	t.Run("remove", func(t *testing.T) {
		if err := testbed.InNamespace(b.node, func() error {
			removed, err := tbl.Remove(context.Background())
			if err == nil && !removed {
				err = fmt.Errorf("Remove found no table")
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	})
}
