package subnetenv

import (
	"reflect"
	"strings"
	"testing"
)

// Seeds: what flanneld writes, and inconsistent or hostile files.
var envSeeds = []string{
	"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
	"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
	"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.245.1.1/24\nFLANNEL_MTU=1450\n",
	"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.0.0.1/8\nFLANNEL_MTU=1450\n",
	"FLANNEL_NETWORK=fd00::/8\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n",
	"FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=-1\n", "FLANNEL_SUBNET='10.244.1.1/24'\n",
	"FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n",
	"# comment\n\nFLANNEL_SUBNET=\"10.244.1.1/24\"\r\nFLANNEL_MTU=+9000\n", "=\n", "FLANNEL_MTU\n",
	"FLANNEL_SUBNET=::ffff:10.244.1.1/120\n", strings.Repeat("X", 70000),
}

func FuzzParse(f *testing.F) {
	for _, s := range envSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		checkErr := e.Check()
		// What we parse, we can write and read back unchanged; a consistent
		// file stays consistent.
		again, err := Parse(e.Marshal())
		if err != nil {
			t.Fatalf("parsed %q but cannot re-read %q: %v", data, e.Marshal(), err)
		}
		if !reflect.DeepEqual(again, e) {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
		if (checkErr == nil) != (again.Check() == nil) {
			t.Fatalf("Check disagrees after a round trip: %v vs %v", checkErr, again.Check())
		}
		if checkErr == nil && e.Subnet.IsValid() && !e.Network.Contains(e.Subnet.Addr()) {
			t.Fatalf("Check accepted FLANNEL_SUBNET=%s outside FLANNEL_NETWORK=%s", e.Subnet, e.Network)
		}
	})
}

func TestCheckNamesBothValues(t *testing.T) {
	for _, tc := range []struct{ file, want1, want2 string }{
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.245.1.1/24\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET=10.245.1.1/24", "FLANNEL_NETWORK=10.244.0.0/16"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.0.0.1/8\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET=10.0.0.1/8", "FLANNEL_NETWORK=10.244.0.0/16"},
		{"FLANNEL_NETWORK=fd00::/8\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n", "FLANNEL_NETWORK=fd00::/8", "IPv4"},
		{"FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:245:1::1/64\nFLANNEL_MTU=1450\n", "FLANNEL_IPV6_SUBNET=fd00:10:245:1::1/64", "FLANNEL_IPV6_NETWORK=fd00:10:244::/56"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=20\n", "FLANNEL_MTU=20", "68"},
	} {
		e, err := Parse([]byte(tc.file))
		if err != nil {
			t.Fatalf("%q: %v", tc.file, err)
		}
		err = e.Check()
		if err == nil || !strings.Contains(err.Error(), tc.want1) || !strings.Contains(err.Error(), tc.want2) {
			t.Errorf("%q: Check() = %v, want an error naming %s and %s", tc.file, err, tc.want1, tc.want2)
		}
	}
	good, _ := Parse([]byte(envSeeds[1]))
	if err := good.Check(); err != nil {
		t.Errorf("dual-stack file flanneld writes: %v", err)
	}
}
