package leaseset

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/vishvananda/netns"
)

// WatchedHost reads the host's routes once and again only after a change
// outside flannel's devices: thousands of routes added on flannel.1 cost
// no re-read, and a Prefixes call then allocates next to nothing, where
// NetlinkHost parses every route each time. Foreign routes and addresses
// still show up, and go, within a second.
func TestWatchedHostRereadsOnlyForeignChanges(t *testing.T) {
	tbtest.NeedRoot(t, "ip")
	ns := tbtest.NS(t, fmt.Sprintf("fl-lgw-%d", os.Getpid()))
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	// The links must have settled before the count below starts: IPv6
	// link-local addresses finishing DAD, and the carrier coming up
	// (announced by the kernel's linkwatch up to a second later), are
	// changes on eth0 and would each cost a full read. Under load they
	// landed inside the count.
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1").CombinedOutput(); err != nil {
		t.Fatalf("disable IPv6 in %s: %v\n%s", ns, err, out)
	}
	ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	ip("link", "add", "flannel.1", "type", "veth", "peer", "name", "fl1p")
	ip("link", "set", "eth0", "up")
	ip("link", "set", "flannel.1", "up")
	ip("link", "set", "eth0p", "up")
	ip("link", "set", "fl1p", "up")
	ip("addr", "add", "198.51.100.11/24", "dev", "eth0")
	awaitCarrier(t, ns, "eth0", "flannel.1", "eth0p", "fl1p")
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := WatchHost(ctx, &nsh)
	if err != nil {
		t.Fatal(err)
	}
	// Subscribing marks the cache stale once (a note): wait for it, so
	// that the reads counted below are the notifications' doing.
	waitHandled(t, w, 1)
	eventually(t, w, "the eth0 route", func(s string) bool { return strings.Contains(s, "route 198.51.100.0/24 dev eth0") })
	base := w.handled()

	// 2000 routes on flannel.1, as for 2000 VXLAN peers.
	var batch strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&batch, "route add 10.244.%d.%d/30 via 10.244.%d.%d dev flannel.1 onlink\n", i/64, i%64*4, i/64, i%64*4)
	}
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
	waitHandled(t, w, base+2000)
	reads := w.readCount()
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := w.Prefixes(); err != nil {
			t.Fatal(err)
		}
	})
	if got := w.readCount(); got != reads {
		t.Errorf("%d full reads after 2000 flannel routes were added, want none", got-reads)
	}
	full := testing.AllocsPerRun(2, func() {
		if _, err := w.read.Prefixes(); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations per Prefixes with 2000 flannel routes: %.0f (a full read: %.0f)", allocs, full)
	if allocs > 10 {
		t.Errorf("%.0f allocations per Prefixes, want a handful: the flannel routes were read again", allocs)
	}

	ip("route", "add", "203.0.113.0/24", "via", "198.51.100.1", "dev", "eth0")
	eventually(t, w, "the new eth0 route", func(s string) bool { return strings.Contains(s, "route 203.0.113.0/24 via 198.51.100.1 dev eth0") })
	ip("route", "add", "blackhole", "10.99.0.0/16")
	eventually(t, w, "the blackhole route", func(s string) bool { return strings.Contains(s, "blackhole route 10.99.0.0/16") })
	ip("route", "del", "203.0.113.0/24")
	eventually(t, w, "the deleted route gone", func(s string) bool { return !strings.Contains(s, "203.0.113.0/24") })
	ip("addr", "add", "203.0.113.5/32", "dev", "eth0")
	eventually(t, w, "the new address", func(s string) bool { return strings.Contains(s, "address 203.0.113.5/32 on eth0") })
	if p, _ := w.Prefixes(); strings.Contains(fmt.Sprint(p), "flannel.1") {
		t.Errorf("flannel.1's routes listed as the host's: %v", p)
	}
}

// awaitCarrier waits until each link's operational state is UP: the
// kernel has then sent the notification that says so.
func awaitCarrier(t *testing.T, ns string, links ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, l := range links {
		for {
			out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", "dev", l).CombinedOutput()
			if err == nil && strings.Contains(string(out), " state UP ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s not up after 10 s: %v %s", l, ns, err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func eventually(t *testing.T, w *WatchedHost, what string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		p, err := w.Prefixes()
		if err != nil {
			t.Fatal(err)
		}
		if ok(fmt.Sprint(p)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within 1 s: %s; have %v", what, p)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitHandled(t *testing.T, w *WatchedHost, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for w.handled() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d netlink notifications handled within 5 s", w.handled(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *WatchedHost) handled() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.notes
}

func (w *WatchedHost) readCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reads
}
