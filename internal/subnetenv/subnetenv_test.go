package subnetenv

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
)

func TestWriteReadUpstreamFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "subnet.env")
	e := &Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24"),
		IPv6Network: netip.MustParsePrefix("fd00:10:244::/56"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::1/64"),
		MTU: 1450, IPMasq: true,
	}
	if err := Write(path, e); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if string(got) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
	back, err := Read(path)
	if err != nil || !reflect.DeepEqual(back, e) {
		t.Fatalf("read back %+v, %v", back, err)
	}
}

// Older flanneld versions wrote several networks comma-separated; every one
// is read, and written back the same way.
func TestCommaSeparatedNetworks(t *testing.T) {
	in := "FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n" +
		"FLANNEL_IPV6_NETWORK=fd00:10:244::/56,fd00:10:245::/56,fd00:10:246::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n" +
		"FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	e, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if e.Network != netip.MustParsePrefix("10.244.0.0/16") || !reflect.DeepEqual(e.ExtraNetworks, []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}) {
		t.Errorf("IPv4 networks %v + %v", e.Network, e.ExtraNetworks)
	}
	if e.IPv6Network != netip.MustParsePrefix("fd00:10:244::/56") || len(e.ExtraIPv6Networks) != 2 {
		t.Errorf("IPv6 networks %v + %v", e.IPv6Network, e.ExtraIPv6Networks)
	}
	if got := string(e.Marshal()); got != in {
		t.Errorf("written back as:\n%s\nwant:\n%s", got, in)
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{"FLANNEL_MTU=1450\n", "FLANNEL_SUBNET=10.244.1.1\n", "garbage\n", "FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=x\n", "FLANNEL_NETWORK=10.244.0.0/16,x\nFLANNEL_SUBNET=10.244.1.1/24\n"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

// A reader racing a writer must only ever see a complete file.
func TestAtomicReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	a := &Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24"), MTU: 1450}
	b := &Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.2.1/24"), MTU: 8950, IPMasq: true}
	if err := Write(path, a); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 300; i++ {
			if err := Write(path, []*Env{a, b}[i%2]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 300; i++ {
		e, err := Read(path)
		if err != nil {
			t.Fatalf("read during rewrite: %v", err)
		}
		if !reflect.DeepEqual(e, a) && !reflect.DeepEqual(e, b) {
			t.Fatalf("torn read: %+v", e)
		}
	}
	wg.Wait()
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".subnet.env.*"))
	if len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}
