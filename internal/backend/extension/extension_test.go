package extension

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"ip route add $SUBNET via $PUBLIC_IP", []string{"ip", "route", "add", "$SUBNET", "via", "$PUBLIC_IP"}},
		{`  a   'b c'  "d \"e\" \$f" g\ h `, []string{"a", "b c", `d "e" $f`, "g h"}},
		{`echo ''`, []string{"echo", ""}},
		{`x;rm -rf / | cat`, []string{"x;rm", "-rf", "/", "|", "cat"}},
	} {
		got, err := splitWords(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`echo 'x`, `echo "x`} {
		if _, err := splitWords(bad); err == nil {
			t.Errorf("splitWords(%q) accepted an unterminated quote", bad)
		}
	}
}

// A value with shell syntax stays one argument: no shell runs.
func TestExpansionCannotInject(t *testing.T) {
	dir := t.TempDir()
	c, err := parseCommand("SubnetAddCommand", "touch $TARGET")
	if err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(dir, "a; touch pwned")
	if r := c.run(context.Background(), map[string]string{"TARGET": evil}, ""); r.err != nil {
		t.Fatalf("run: %s", r.describe())
	}
	if _, err := os.Stat(evil); err != nil {
		t.Errorf("the expanded value was not passed as one argument: %v", err)
	}
	if _, err := os.Stat("pwned"); err == nil {
		_ = os.Remove("pwned")
		t.Errorf("a value injected a second command")
	}
}

// script writes an executable shell script (the operator's own program;
// flanneld still runs it without a shell of its own).
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func testNetwork(t *testing.T, raw string) *network {
	t.Helper()
	ext := &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", MTU: 1500}}
	b, err := New(ext, json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	nw, err := b.RegisterNetwork(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return nw.(*network)
}

func peer(subnet, ip, data string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{
		PublicIP: netip.MustParseAddr(ip), BackendType: TypeName, BackendData: json.RawMessage(data)}}
}

func TestLifecycle(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	add := script(t, dir, "add", `echo "add $1 $2 $SUBNET $PUBLIC_IP $(cat)" >>`+log)
	rm := script(t, dir, "rm", `echo "rm $SUBNET" >>`+log)
	post := script(t, dir, "post", `echo "post $NETWORK $SUBNET $PUBLIC_IP" >>`+log)
	raw, _ := json.Marshal(Options{
		PreStartupCommand: "echo vtep-data", PostStartupCommand: post,
		SubnetAddCommand: add + " $SUBNET ${PUBLIC_IP}", SubnetRemoveCommand: rm,
	})
	n := testNetwork(t, string(raw))
	if got := string(n.LeaseAttrs().BackendData); got != `"vtep-data"` {
		t.Errorf("BackendData = %s, want the PreStartupCommand output as a JSON string", got)
	}
	own := peer("10.244.1.0/24", "198.51.100.11", "")
	if err := n.Activate(context.Background(), &own); err != nil {
		t.Fatal(err)
	}
	p := peer("10.244.2.0/24", "198.51.100.12", `"peer-data"`)
	other := peer("10.244.3.0/24", "198.51.100.13", `{"VNI":1}`)
	other.Attrs.BackendType = "vxlan"
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Added, Lease: p}, {Type: lease.Added, Lease: other}})
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Removed, Lease: p}})
	want := "post 10.244.0.0/16 10.244.1.0/24 198.51.100.11\n" +
		"add 10.244.2.0/24 198.51.100.12 10.244.2.0/24 198.51.100.12 peer-data\n" +
		"rm 10.244.2.0/24\n"
	if got, _ := os.ReadFile(log); string(got) != want {
		t.Errorf("commands ran:\n%s\nwant:\n%s", got, want)
	}
}

// A failing SubnetAddCommand is logged and retried with the next batch; a
// newer event for the same lease replaces it.
func TestFailedCommandIsRetried(t *testing.T) {
	dir := t.TempDir()
	gate, log := filepath.Join(dir, "gate"), filepath.Join(dir, "log")
	add := script(t, dir, "add", `[ -e `+gate+` ] || { echo not yet >&2; exit 3; }; echo "add $SUBNET" >>`+log)
	raw, _ := json.Marshal(Options{SubnetAddCommand: add})
	n := testNetwork(t, string(raw))
	p := peer("10.244.2.0/24", "198.51.100.12", "")
	n.HandleEvents(context.Background(), []lease.Event{{Type: lease.Added, Lease: p}})
	if len(n.failed) != 1 {
		t.Fatalf("failed command not kept for retry: %v", n.failed)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n.HandleEvents(context.Background(), nil)
	if got, _ := os.ReadFile(log); strings.TrimSpace(string(got)) != "add 10.244.2.0/24" || len(n.failed) != 0 {
		t.Errorf("after retry: log %q, pending %v", got, n.failed)
	}
}

func TestPreStartupFailureStopsStart(t *testing.T) {
	ext := &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", MTU: 1500}}
	b, err := New(ext, json.RawMessage(`{"PreStartupCommand":"false"}`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.RegisterNetwork(context.Background(), &config.Config{EnableIPv4: true})
	if err == nil || !strings.Contains(err.Error(), `PreStartupCommand "false" failed: exit status 1`) {
		t.Errorf("err = %v", err)
	}
}

// PostStartupCommand gets upstream's variable names, IPV6SUBNET among them,
// both expanded in its words and in its environment.
func TestPostStartupVariablesAsUpstream(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	post := script(t, dir, "post", `echo "$1 $2 env:$NETWORK $SUBNET $IPV6SUBNET $PUBLIC_IP $PUBLIC_IPV6" >>`+log)
	raw, _ := json.Marshal(Options{PostStartupCommand: post + " $IPV6SUBNET ${PUBLIC_IPV6}"})
	n := testNetwork(t, string(raw))
	own := peer("10.244.1.0/24", "198.51.100.11", "")
	own.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:1::/64")
	own.Attrs.PublicIPv6 = netip.MustParseAddr("fd00:198:51:100::11")
	if err := n.Activate(context.Background(), &own); err != nil {
		t.Fatal(err)
	}
	want := "fd00:10:244:1::/64 fd00:198:51:100::11 env:10.244.0.0/16 10.244.1.0/24 fd00:10:244:1::/64 198.51.100.11 fd00:198:51:100::11\n"
	if got, _ := os.ReadFile(log); string(got) != want {
		t.Errorf("PostStartupCommand ran with:\n%s\nwant:\n%s", got, want)
	}
}
