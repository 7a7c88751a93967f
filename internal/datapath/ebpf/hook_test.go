package ebpf

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
)

// inFreshNetns runs fn on a thread in a new, empty network namespace with
// one veth pair, up, passing one end's index.
func inFreshNetns(t *testing.T, fn func(ifindex int)) {
	t.Helper()
	tbtest.NeedRoot(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread dies with its namespace: never unlocked
		ns, err := netns.New()
		if err != nil {
			t.Errorf("new netns: %v", err)
			return
		}
		defer ns.Close()
		d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fp-test0"}, PeerName: "fp-test1"}
		if err := netlink.LinkAdd(d); err != nil {
			t.Errorf("add veth: %v", err)
			return
		}
		if err := netlink.LinkSetUp(d); err != nil {
			t.Errorf("veth up: %v", err)
			return
		}
		fn(d.Attrs().Index)
	}()
	<-done
}

// Both ways of attaching: the program is seen where it is attached (Path,
// which doctor uses), intact says whether it still is, and detaching, by
// flanneld or by someone else, leaves the kernel path.
func TestHooks(t *testing.T) {
	o, err := loadObjects()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	inFreshNetns(t, func(idx int) {
		for _, h := range []hook{tcxHook{}, clsactHook{}} {
			a, err := h.attach(idx, o.FromPod)
			if err != nil {
				t.Errorf("%s: attach: %v", h, err)
				continue
			}
			path, _ := Path(idx)
			intact, err := a.intact()
			if path != "ebpf ("+h.String()+")" || !intact || err != nil {
				t.Errorf("%s: attached, Path says %q and intact %v (%v)", h, path, intact, err)
			}
			if err := a.close(); err != nil {
				t.Errorf("%s: close: %v", h, err)
			}
			path, _ = Path(idx)
			if intact, _ := a.intact(); intact || path != "kernel" {
				t.Errorf("%s: closed, Path says %q and intact %v", h, path, intact)
			}
		}
		// A filter a killed flanneld left (tcx links die with it) is
		// removed on the kernel path.
		a, err := clsactHook{}.attach(idx, o.ToPod)
		if err != nil {
			t.Errorf("clsact: attach: %v", err) // not Fatal: this is not the test's goroutine
			return
		}
		if n, err := RemoveLeftovers(); n != 1 || err != nil {
			t.Errorf("RemoveLeftovers removed %d (%v), want 1", n, err)
		}
		if intact, _ := a.intact(); intact {
			t.Error("the filter is still there after RemoveLeftovers")
		}
	})
}
