package tbtest

import (
	"fmt"
	"strings"
	"testing"
)

// recorder stands in for a test: it records which way Unavailable and
// KernelLacks stopped it.
type recorder struct {
	testing.TB
	calls []string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.calls = append(r.calls, "fatal: "+fmt.Sprintf(format, args...))
}
func (r *recorder) Skip(args ...any) { r.calls = append(r.calls, "skip: "+fmt.Sprint(args...)) }
func (r *recorder) Skipf(format string, args ...any) {
	r.calls = append(r.calls, "skip: "+fmt.Sprintf(format, args...))
}

func TestUnavailableFailsInCI(t *testing.T) {
	for _, tc := range []struct{ ci, want string }{
		{"true", "fatal: cannot run in CI: needs iperf3"},
		{"", "skip: needs iperf3"},
		{"false", "skip: needs iperf3"},
	} {
		t.Setenv("CI", tc.ci)
		r := &recorder{}
		Unavailable(r, "needs %s", "iperf3")
		if len(r.calls) == 0 || r.calls[0] != tc.want {
			t.Errorf("CI=%q: Unavailable did %q, want %q first", tc.ci, r.calls, tc.want)
		}
	}
}

func TestKernelLacksIsTheAcceptedSkip(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{}
	KernelLacks(r, "WireGuard", "no wireguard module")
	if len(r.calls) != 1 || r.calls[0] != "skip: kernel lacks WireGuard: no wireguard module" {
		t.Errorf("KernelLacks did %q", r.calls)
	}
	if !strings.HasPrefix(strings.TrimPrefix(r.calls[0], "skip: "), "kernel lacks ") {
		t.Error("the message does not carry the prefix scripts/testreport accepts")
	}
}

func TestNeedToolsNamesEveryMissingTool(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{}
	NeedTools(r, "sh", "no-such-tool-a", "/no/such/tool-b")
	if len(r.calls) == 0 || !strings.Contains(r.calls[0], "no-such-tool-a, /no/such/tool-b") || strings.Contains(r.calls[0], "sh,") {
		t.Errorf("NeedTools did %q, want one failure naming exactly the two missing tools", r.calls)
	}
}
