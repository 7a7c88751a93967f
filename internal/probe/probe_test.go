package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/testbed"
	"github.com/flannelgo/flannel/internal/testbed/tbtest"
)

// In a namespace whose loopback has MTU 1280: an echo answers, a DF probe
// larger than the MTU is refused by the kernel, the same size without DF
// is fragmented and answers, and an address nobody holds times out.
func TestPing(t *testing.T) {
	tbtest.NeedRoot(t, "ip")
	ns := tbtest.NS(t, fmt.Sprintf("fl-prb-%d", os.Getpid()))
	for _, argv := range [][]string{
		{"ip", "-n", ns, "link", "set", "lo", "mtu", "1280", "up"},
		{"ip", "-n", ns, "route", "add", "10.244.250.0/24", "dev", "lo"}, // not local: dropped, never answered
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	var p *Pinger
	if err := testbed.InNamespace(ns, func() (err error) { p, err = NewPinger(); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	if rtt, err := p.Ping(ctx, lo, 56, true, time.Second); err != nil || rtt <= 0 {
		t.Errorf("ping 127.0.0.1: rtt %s, %v", rtt, err)
	}
	if _, err := p.Ping(ctx, lo, 1280-28, true, time.Second); err != nil {
		t.Errorf("DF probe of exactly the MTU: %v", err)
	}
	if _, err := p.Ping(ctx, lo, 1281-28, true, time.Second); !errors.Is(err, ErrTooBig) {
		t.Errorf("DF probe one byte over the MTU: %v, want ErrTooBig", err)
	}
	if _, err := p.Ping(ctx, lo, 2000, false, time.Second); err != nil {
		t.Errorf("fragmented probe: %v", err)
	}
	start := time.Now()
	if _, err := p.Ping(ctx, netip.MustParseAddr("10.244.250.1"), 56, false, 300*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("probe nobody answers: %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > time.Second {
		t.Errorf("timeout after %s, want 300ms", took)
	}
}
