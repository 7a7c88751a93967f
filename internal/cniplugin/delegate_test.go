package cniplugin

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/subnetenv"
)

func testEnv() *subnetenv.Env {
	return &subnetenv.Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:  netip.MustParsePrefix("10.244.1.1/24"),
		MTU:     1450,
		IPMasq:  true,
	}
}

func mustNetConf(t *testing.T, s string) *NetConf {
	t.Helper()
	n, err := ParseNetConf([]byte(s))
	if err != nil {
		t.Fatalf("ParseNetConf: %v", err)
	}
	return n
}

// normalise round-trips through JSON so expectations can be written as
// JSON text and compared regardless of Go types (int vs float64, ...).
func normalise(t *testing.T, v any) any {
	t.Helper()
	var data []byte
	switch x := v.(type) {
	case string:
		data = []byte(x)
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", data, err)
	}
	return out
}

func assertJSON(t *testing.T, got any, want string) {
	t.Helper()
	if g, w := normalise(t, got), normalise(t, want); !reflect.DeepEqual(g, w) {
		gj, _ := json.MarshalIndent(g, "", "  ")
		wj, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("got\n%s\nwant\n%s", gj, wj)
	}
}

func TestParseNetConfDefaults(t *testing.T) {
	n := mustNetConf(t, `{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}`)
	if n.SubnetFile != "/run/flannel/subnet.env" || n.DataDir != "/var/lib/cni/flannel" {
		t.Errorf("defaults: subnetFile=%q dataDir=%q", n.SubnetFile, n.DataDir)
	}
	n = mustNetConf(t, `{"name":"cbr0","type":"flannel","subnetFile":"/x/s.env","dataDir":"/x/d"}`)
	if n.SubnetFile != "/x/s.env" || n.DataDir != "/x/d" {
		t.Errorf("explicit: subnetFile=%q dataDir=%q", n.SubnetFile, n.DataDir)
	}
	if _, err := ParseNetConf([]byte(`{"name":`)); err == nil || !strings.Contains(err.Error(), "flannel CNI network config") {
		t.Errorf("bad JSON: err = %v", err)
	}
}

// The flannel entry of kube-flannel's conflist, as shipped upstream.
const kubeFlannelEntry = `{"cniVersion":"0.3.1","name":"cbr0","type":"flannel",
	"delegate":{"hairpinMode":true,"isDefaultGateway":true}}`

func TestDelegateConfKubeFlannel(t *testing.T) {
	got, err := DelegateConf(mustNetConf(t, kubeFlannelEntry), testEnv())
	if err != nil {
		t.Fatal(err)
	}
	assertJSON(t, got, `{
		"cniVersion": "0.3.1",
		"name": "cbr0",
		"type": "bridge",
		"bridge": "cni0",
		"isGateway": true,
		"ipMasq": false,
		"mtu": 1450,
		"hairpinMode": true,
		"isDefaultGateway": true,
		"ipam": {
			"type": "host-local",
			"ranges": [[{"subnet": "10.244.1.0/24"}]],
			"routes": [{"dst": "10.244.0.0/16"}]
		}
	}`)
}

func TestDelegateConfIPMasqFollowsFlanneld(t *testing.T) {
	env := testEnv()
	env.IPMasq = false
	got, err := DelegateConf(mustNetConf(t, kubeFlannelEntry), env)
	if err != nil {
		t.Fatal(err)
	}
	if got["ipMasq"] != true {
		t.Errorf("flanneld not masquerading: bridge ipMasq = %v, want true", got["ipMasq"])
	}
}

// ipMasq follows FLANNEL_IPMASQ for every delegate type, as upstream:
// a ptp pod network masquerades in the delegate when flanneld does not.
func TestDelegateConfIPMasqEveryType(t *testing.T) {
	for _, typ := range []string{"bridge", "ptp", "ipvlan", "macvlan"} {
		for _, flanneldMasq := range []bool{true, false} {
			env := testEnv()
			env.IPMasq = flanneldMasq
			n := mustNetConf(t, `{"cniVersion":"1.0.0","name":"pods","type":"flannel","delegate":{"type":"`+typ+`"}}`)
			got, err := DelegateConf(n, env)
			if err != nil {
				t.Fatal(err)
			}
			if got["ipMasq"] != !flanneldMasq {
				t.Errorf("%s delegate, FLANNEL_IPMASQ=%v: ipMasq = %v, want %v", typ, flanneldMasq, got["ipMasq"], !flanneldMasq)
			}
		}
	}
}

func TestDelegateConfDualStack(t *testing.T) {
	env := testEnv()
	env.IPv6Network = netip.MustParsePrefix("fd00:10:244::/56")
	env.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:1::1/64")
	got, err := DelegateConf(mustNetConf(t, `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}`), env)
	if err != nil {
		t.Fatal(err)
	}
	assertJSON(t, got["ipam"], `{
		"type": "host-local",
		"ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
		"routes": [{"dst": "10.244.0.0/16"}, {"dst": "fd00:10:244::/56"}]
	}`)
}

// A subnet.env written by an older flanneld lists several networks
// comma-separated; the pod gets a route to each, as upstream's plugin.
func TestDelegateConfCommaSeparatedNetworks(t *testing.T) {
	env, err := subnetenv.Parse([]byte("FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n" +
		"FLANNEL_IPV6_NETWORK=fd00:10:244::/56,fd00:10:245::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DelegateConf(mustNetConf(t, `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}`), env)
	if err != nil {
		t.Fatal(err)
	}
	assertJSON(t, got["ipam"], `{
		"type": "host-local",
		"ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
		"routes": [{"dst": "10.244.0.0/16"}, {"dst": "10.245.0.0/16"}, {"dst": "fd00:10:244::/56"}, {"dst": "fd00:10:245::/56"}]
	}`)
}

func TestDelegateConfIPv6Only(t *testing.T) {
	env := &subnetenv.Env{
		IPv6Network: netip.MustParsePrefix("fd00:10:244::/56"),
		IPv6Subnet:  netip.MustParsePrefix("fd00:10:244:1::1/64"),
		MTU:         1430,
	}
	got, err := DelegateConf(mustNetConf(t, `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}`), env)
	if err != nil {
		t.Fatal(err)
	}
	assertJSON(t, got["ipam"], `{
		"type": "host-local",
		"ranges": [[{"subnet": "fd00:10:244:1::/64"}]],
		"routes": [{"dst": "fd00:10:244::/56"}]
	}`)
	if got["mtu"] != 1430 {
		t.Errorf("mtu = %v", got["mtu"])
	}
}

func TestDelegateConfDelegateOverrides(t *testing.T) {
	n := mustNetConf(t, `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel",
		"delegate":{"type":"bridge","bridge":"br-pods","ipMasq":true,"mtu":1400,"isGateway":false,"promiscMode":true}}`)
	got, err := DelegateConf(n, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"bridge": "br-pods", "ipMasq": true, "mtu": 1400.0, "isGateway": false, "promiscMode": true} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}
}

func TestDelegateConfNonBridge(t *testing.T) {
	n := mustNetConf(t, `{"cniVersion":"1.0.0","name":"pods","type":"flannel",
		"delegate":{"type":"ipvlan","master":"eth1","mode":"l2"}}`)
	got, err := DelegateConf(n, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	assertJSON(t, got, `{
		"cniVersion": "1.0.0",
		"name": "pods",
		"type": "ipvlan",
		"master": "eth1",
		"mode": "l2",
		"mtu": 1450,
		"ipMasq": false,
		"ipam": {
			"type": "host-local",
			"ranges": [[{"subnet": "10.244.1.0/24"}]],
			"routes": [{"dst": "10.244.0.0/16"}]
		}
	}`)
	for _, k := range []string{"isGateway", "bridge"} {
		if _, ok := got[k]; ok {
			t.Errorf("bridge-only key %q injected into an ipvlan delegate", k)
		}
	}
}

func TestDelegateConfTopLevelIPAM(t *testing.T) {
	n := mustNetConf(t, `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel",
		"ipam":{"dataDir":"/tmp/ipam","routes":[{"dst":"192.168.0.0/16"}]}}`)
	got, err := DelegateConf(n, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	assertJSON(t, got["ipam"], `{
		"type": "host-local",
		"dataDir": "/tmp/ipam",
		"ranges": [[{"subnet": "10.244.1.0/24"}]],
		"routes": [{"dst": "192.168.0.0/16"}, {"dst": "10.244.0.0/16"}]
	}`)
	n = mustNetConf(t, `{"name":"cbr0","type":"flannel","ipam":{"type":"other-ipam"}}`)
	got, err = DelegateConf(n, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	if typ := got["ipam"].(map[string]any)["type"]; typ != "other-ipam" {
		t.Errorf("ipam type = %v, want other-ipam", typ)
	}
}

func TestDelegateConfPassesRuntimeConfig(t *testing.T) {
	n := mustNetConf(t, `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","runtimeConfig":{"mac":"aa:bb:cc:dd:ee:ff"}}`)
	got, err := DelegateConf(n, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	assertJSON(t, got["runtimeConfig"], `{"mac":"aa:bb:cc:dd:ee:ff"}`)
}

func TestDelegateConfDoesNotModifyNetConf(t *testing.T) {
	n := mustNetConf(t, `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel",
		"delegate":{"hairpinMode":true},"ipam":{"routes":[{"dst":"192.168.0.0/16"}]}}`)
	before := normalise(t, n)
	for i := 0; i < 2; i++ {
		if _, err := DelegateConf(n, testEnv()); err != nil {
			t.Fatal(err)
		}
	}
	if after := normalise(t, n); !reflect.DeepEqual(before, after) {
		t.Errorf("netconf changed:\nbefore %v\nafter  %v", before, after)
	}
}

func TestDelegateConfErrors(t *testing.T) {
	noNetwork := testEnv()
	noNetwork.Network = netip.Prefix{}
	noMTU := testEnv()
	noMTU.MTU = 0
	outside := testEnv()
	outside.Subnet = netip.MustParsePrefix("10.245.1.1/24")
	noV6Net := testEnv()
	noV6Net.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:1::1/64")
	for _, tc := range []struct {
		name, conf string
		env        *subnetenv.Env
		want       string
	}{
		{"delegate name", `{"name":"n","type":"flannel","delegate":{"name":"x"}}`, testEnv(), "'name'"},
		{"delegate ipam", `{"name":"n","type":"flannel","delegate":{"ipam":{}}}`, testEnv(), "'ipam'"},
		{"delegate type not a string", `{"name":"n","type":"flannel","delegate":{"type":1}}`, testEnv(), "'type'"},
		{"ipam routes not a list", `{"name":"n","type":"flannel","ipam":{"routes":"x"}}`, testEnv(), "ipam.routes"},
		{"no FLANNEL_NETWORK", `{"name":"n","type":"flannel"}`, noNetwork, "FLANNEL_NETWORK"},
		{"no FLANNEL_MTU", `{"name":"n","type":"flannel"}`, noMTU, "FLANNEL_MTU"},
		{"FLANNEL_SUBNET outside FLANNEL_NETWORK", `{"name":"n","type":"flannel"}`, outside, "FLANNEL_SUBNET=10.245.1.1/24 is not inside FLANNEL_NETWORK=" + outside.Network.String()},
		{"no FLANNEL_IPV6_NETWORK", `{"name":"n","type":"flannel"}`, noV6Net, "FLANNEL_IPV6_NETWORK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DelegateConf(mustNetConf(t, tc.conf), tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestStatePathRejectsEscapes(t *testing.T) {
	for _, id := range []string{"", ".", "..", "../etc", "a/b"} {
		if _, err := statePath("/data", id); err == nil {
			t.Errorf("statePath(%q) accepted", id)
		}
	}
	if p, err := statePath("/data", "abc-123"); err != nil || p != "/data/abc-123" {
		t.Errorf("statePath = %q, %v", p, err)
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
