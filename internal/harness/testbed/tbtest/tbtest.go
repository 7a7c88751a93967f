// Package tbtest is the testing.TB adapter of internal/harness/testbed: the
// helpers every namespace test needs (root and tool checks that fail in
// CI, namespaces removed at the end of the test, commands that fail the
// test, ping with retries) and Net, a small hand-laid network of
// namespaces for component tests of one package (backends, interface
// selection, traffic rules, the CNI plugin). Whole clusters with flanneld
// are built with testbed.New (see test/e2e).
//
// Everything here stands on testbed's primitives; a helper that two test
// packages need belongs here, once.
package tbtest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// InCI reports whether the tests run in CI ($CI=true), where a test that
// cannot run is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable stops a test whose prerequisite (root, a tool, a server
// binary, free address ranges) is missing: a failure in CI, a skip
// elsewhere, so that a developer without root can still run the rest.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("cannot run in CI: %s", msg)
	}
	t.Skip(msg)
}

// KernelLacks skips a test that needs a kernel feature this machine does
// not have. It is the only skip CI accepts: scripts/test.sh lists these
// ("kernel lacks <feature>: <reason>") at the end of every run.
func KernelLacks(t testing.TB, feature, reason string) {
	t.Helper()
	t.Skipf("kernel lacks %s: %s", feature, reason)
}

// NeedRoot stops the test (Unavailable) unless it runs as root and every
// tool is found in PATH (or, with a slash, exists).
func NeedRoot(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	NeedTools(t, tools...)
}

// NeedTools stops the test (Unavailable) unless every tool is present.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		Unavailable(t, "needs %s (scripts/setup.sh installs them)", strings.Join(missing, ", "))
	}
}

// NeedRangesFree fails the test when the host uses the test address
// ranges (testbed.CheckHostRanges): the test would still stay in its
// namespaces, but an operator reading the host's tables must never meet
// the same addresses twice.
func NeedRangesFree(t testing.TB) {
	t.Helper()
	if err := testbed.CheckHostRanges(testbed.Ranges()...); err != nil {
		t.Fatal(err)
	}
}

// Ctx is a context cancelled after d or when the test ends.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// NS creates network namespace name (lo up), removing a leftover of the
// same name from a killed run first, and deletes it when the test ends.
func NS(t testing.TB, name string) string {
	t.Helper()
	if err := testbed.DeleteNS(name); err != nil {
		t.Fatalf("remove leftover namespace: %v", err)
	}
	if err := testbed.CreateNS(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testbed.DeleteNS(name); err != nil {
			t.Errorf("%v", err)
		}
	})
	return name
}

// Run runs a command and fails the test when it fails; it returns the
// combined output.
func Run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// PingWithin is how long Ping keeps trying: neighbour resolution on a busy
// machine can take a moment.
const PingWithin = 5 * time.Second

// Ping fails the test unless an echo of size payload bytes from ns to dst
// is answered within PingWithin (df: don't fragment).
func Ping(t testing.TB, ns string, dst netip.Addr, size int, df bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), PingWithin+5*time.Second)
	defer cancel()
	if err := testbed.PingWithin(ctx, ns, dst, size, df, PingWithin); err != nil {
		t.Fatalf("ping %s from %s: %v", dst, ns, err)
	}
}

// NoPing fails the test if a single echo of size bytes from ns to dst is
// answered: the path must be closed (or too small for it, with df).
func NoPing(t testing.TB, ns string, dst netip.Addr, size int, df bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := testbed.Ping(ctx, ns, dst, size, df); err == nil {
		t.Fatalf("ping of %d bytes (df %v) from %s reached %s, want no answer", size, df, ns, dst)
	}
}

// InNS runs fn on the test's goroutine, its OS thread switched into
// namespace ns, so fn may call t.Fatal and use netlink's and net's
// package-level functions there. Should switching back fail, the thread
// stays locked and dies with the test's goroutine instead of carrying the
// namespace to other goroutines.
func InNS(t testing.TB, ns string, fn func()) {
	t.Helper()
	target, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open namespace %s: %v", ns, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current namespace: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter namespace %s: %v", ns, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("leave namespace %s: %v", ns, err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// Handle is a netlink handle bound to namespace ns, closed when the test
// ends.
// NSHandle opens namespace ns for the rest of the test.
func NSHandle(t testing.TB, ns string) netns.NsHandle {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open namespace %s: %v", ns, err)
	}
	t.Cleanup(func() { nsh.Close() })
	return nsh
}

func Handle(t testing.TB, ns string) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open namespace %s: %v", ns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Eventually polls cond every 100 ms until it returns nil, and fails the
// test with cond's last error if within passes first. It returns how long
// it waited: a test waits on the observable event, never on a sleep.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	return poll(t, within, 100*time.Millisecond, what, cond)
}

// poll calls cond every interval until it returns nil, and says how long
// that took; it fails the test with cond's last error once within passes.
func poll(t testing.TB, within, interval time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s: %v", what, within, err)
			return 0
		}
		time.Sleep(interval)
	}
}
