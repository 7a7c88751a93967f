// Package backendtest is the former home of the backends' component-test
// network, now tbtest.Net in internal/testbed/tbtest.
//
// Deprecated: use internal/testbed/tbtest. This package holds no harness
// of its own: every name here is an alias of, or a thin call into, tbtest,
// kept so that branches written against backendtest keep compiling while
// they merge. Remove it once nothing imports it.
package backendtest

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/testbed"
	"github.com/flannelgo/flannel/internal/testbed/tbtest"
)

// The old names of tbtest's types.
type (
	Lab     = tbtest.Net
	Segment = tbtest.Segment
	Node    = tbtest.Node
	Pod     = tbtest.Pod
	Logs    = tbtest.Logs
)

// The test ranges (see tbtest).
var (
	Segment1 = tbtest.Segment1
	Segment2 = tbtest.Segment2
	Segment6 = tbtest.Segment6
	PodNet   = tbtest.PodNet
	PodNet6  = tbtest.PodNet6
)

// The old names of tbtest's functions.
var (
	NewLab      = tbtest.NewNet
	Config      = tbtest.BackendConfig
	Up          = tbtest.Up
	Added       = tbtest.Added
	Removed     = tbtest.Removed
	CaptureLogs = tbtest.CaptureLogs
	Run         = tbtest.Run
)

// Ping is tbtest.Ping with ping's own options ("-s", "1382", "-M", "do").
func Ping(t testing.TB, ns string, dst netip.Addr, extra ...string) {
	t.Helper()
	if err := TryPing(ns, dst, tbtest.PingWithin, extra...); err != nil {
		t.Fatal(err)
	}
}

// TryPing is testbed.PingWithin with ping's own options.
func TryPing(ns string, dst netip.Addr, within time.Duration, extra ...string) error {
	size, df := 56, false
	for i := 0; i < len(extra); i++ {
		switch {
		case extra[i] == "-s" && i+1 < len(extra):
			n, err := strconv.Atoi(extra[i+1])
			if err != nil {
				return fmt.Errorf("ping option -s %q: %w", extra[i+1], err)
			}
			size, i = n, i+1
		case extra[i] == "-M" && i+1 < len(extra) && extra[i+1] == "do":
			df, i = true, i+1
		default:
			return fmt.Errorf("ping option %q: use tbtest.Ping", extra[i])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), within+5*time.Second)
	defer cancel()
	return testbed.PingWithin(ctx, ns, dst, size, df, within)
}
