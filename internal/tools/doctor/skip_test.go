package doctor

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

type namedStore struct{ Datastore }

func (namedStore) Name() string { return "etcd" }

func env(t *testing.T, text string) *subnetenv.Env {
	t.Helper()
	e, err := subnetenv.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const goodEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

// With the datastore down, only the datastore check is a PROBLEM: the
// checks that need its data say SKIP and are not counted, and none says
// ok from data it never read.
func TestDatastoreDownSkipsWhatNeedsIt(t *testing.T) {
	f := &facts{in: Inputs{Store: namedStore{}, SubnetFile: "/run/flannel/subnet.env"},
		env: env(t, goodEnv), cfgErr: errors.New("context deadline exceeded")}
	checks := map[string]func(context.Context) Result{
		"datastore": f.checkDatastore, "subnet.env": f.checkSubnetEnv, "backend device": f.checkDevice,
		"kernel state": f.checkKernelState, "public address": f.checkPublicAddress,
		"peer reachability": f.checkReachability, "path MTU": f.checkPathMTU, "forward rules": f.checkForward,
		"masquerade": f.checkMasquerade, "subnet usage": f.checkExhaustion, "vxlan checksum offload": f.checkChecksum,
	}
	var rs []Result
	for name, c := range checks {
		r := c(context.Background())
		rs = append(rs, r)
		want := Skip
		if name == "datastore" {
			want = Problem
		}
		if r.Status != want {
			t.Errorf("%s: %s %q, want %s", name, r.Status, r.Summary, want)
		}
	}
	var out bytes.Buffer
	WriteSummary(&out, rs)
	if want := "1 of 11 checks found a PROBLEM; 10 could not run (SKIP) until it is fixed"; !strings.Contains(out.String(), want) {
		t.Errorf("summary %q, want %q", out.String(), want)
	}
}

// Leases read, but no other node: peer checks have nothing to judge and
// say so instead of "all 0 peers reachable".
func TestNoPeersIsNoOK(t *testing.T) {
	own := leaseAt("10.244.1.0/24", "198.51.100.11")
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	f := &facts{in: Inputs{Store: namedStore{}}, cfg: cfg, leases: []lease.Lease{own}, own: &own, env: env(t, goodEnv)}
	for name, c := range map[string]func(context.Context) Result{"peer reachability": f.checkReachability, "path MTU": f.checkPathMTU} {
		if r := c(context.Background()); r.Status != Skip || !strings.Contains(r.Summary, "no") {
			t.Errorf("%s with no peers: %s %q, want SKIP", name, r.Status, r.Summary)
		}
	}
	f.leases, f.own = nil, nil
	if r := f.checkPublicAddress(context.Background()); r.Status != Skip {
		t.Errorf("public address with 0 leases: %s %q, want SKIP", r.Status, r.Summary)
	}
}

// subnet.env is judged as the CNI plugin judges it: a file the plugin
// refuses is a PROBLEM that says why, whatever the datastore says.
func TestSubnetEnvAsTheCNIPluginSeesIt(t *testing.T) {
	for text, want := range map[string]string{
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.99.1.1/24\nFLANNEL_MTU=1450\n": "FLANNEL_SUBNET=10.99.1.1/24 is not inside FLANNEL_NETWORK=10.244.0.0/16",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n":                  "FLANNEL_MTU is missing",
		"FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n":                               "FLANNEL_NETWORK is missing",
	} {
		f := &facts{in: Inputs{Store: namedStore{}, SubnetFile: "subnet.env"}, env: env(t, text), cfgErr: errors.New("down")}
		r := f.checkSubnetEnv(context.Background())
		if r.Status != Problem || !strings.Contains(r.Summary, "the flannel CNI plugin refuses") || !strings.Contains(r.Summary, want) {
			t.Errorf("%q: %s %q, want a PROBLEM saying %q", text, r.Status, r.Summary, want)
		}
	}
}
