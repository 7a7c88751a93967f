package lease

import (
	"encoding/json"
	"hash/maphash"
	"net/netip"
	"testing"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct{ v4, v6, key string }{
		{"10.244.1.0/24", "", "10.244.1.0-24"},
		{"10.244.1.0/24", "fd00:10:244:1::/64", "10.244.1.0-24&fd00:10:244:1::-64"},
		{"", "fd00:10:244:1::/64", "fd00:10:244:1::-64"},
	} {
		var v4, v6 netip.Prefix
		if tc.v4 != "" {
			v4 = netip.MustParsePrefix(tc.v4)
		}
		if tc.v6 != "" {
			v6 = netip.MustParsePrefix(tc.v6)
		}
		if got := MakeKey(v4, v6); got != tc.key {
			t.Errorf("MakeKey(%v,%v) = %q, want %q", v4, v6, got, tc.key)
		}
		g4, g6, err := ParseKey(tc.key)
		if err != nil || g4 != v4 || g6 != v6 {
			t.Errorf("ParseKey(%q) = %v,%v,%v", tc.key, g4, g6, err)
		}
	}
}

func TestParseKeyRefuses(t *testing.T) {
	for _, k := range []string{"", "10.244.1.0", "10.244.1.1-24", "10.244.1.0-33", "x-24", "10.0.0.0-24&10.1.0.0-24", "10.244.1.0-2x"} {
		if _, _, err := ParseKey(k); err == nil {
			t.Errorf("ParseKey(%q) accepted", k)
		}
	}
}

func TestAttrsUpstreamEncoding(t *testing.T) {
	upstream := `{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}}`
	var a Attrs
	if err := json.Unmarshal([]byte(upstream), &a); err != nil {
		t.Fatal(err)
	}
	if a.PublicIP != netip.MustParseAddr("198.51.100.2") || a.PublicIPv6.IsValid() || a.BackendType != "vxlan" {
		t.Fatalf("decoded %+v", a)
	}
	out, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}}`
	if string(out) != want {
		t.Fatalf("encoded %s, want %s", out, want)
	}
}

func TestAttrsIPv6Only(t *testing.T) {
	a := Attrs{PublicIPv6: netip.MustParseAddr("fd00:198:51:100::2"), BackendType: "vxlan"}
	out, _ := json.Marshal(a)
	if string(out) != `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:198:51:100::2","BackendType":"vxlan"}` {
		t.Fatalf("encoded %s", out)
	}
	var back Attrs
	if err := json.Unmarshal(out, &back); err != nil || back.PublicIP.IsValid() || back.PublicIPv6 != a.PublicIPv6 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

// Equal attributes digest equally (also when their JSON is another copy);
// a change of any one field changes the digest, as does moving bytes from
// one field to the next.
func TestDigestTellsChanges(t *testing.T) {
	seed := maphash.MakeSeed()
	base := Attrs{PublicIP: netip.MustParseAddr("198.51.100.2"), PublicIPv6: netip.MustParseAddr("2001:db8::2"),
		BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`), BackendV6Data: json.RawMessage(`{"VNI":2}`)}
	same := base
	same.BackendData = append(json.RawMessage(nil), base.BackendData...)
	if base.Digest(seed) != same.Digest(seed) {
		t.Fatal("equal attributes, different digests")
	}
	for name, change := range map[string]func(*Attrs){
		"PublicIP":      func(a *Attrs) { a.PublicIP = netip.MustParseAddr("198.51.100.3") },
		"PublicIPv6":    func(a *Attrs) { a.PublicIPv6 = netip.Addr{} },
		"BackendType":   func(a *Attrs) { a.BackendType = "host-gw" },
		"BackendData":   func(a *Attrs) { a.BackendData = json.RawMessage(`{"VNI":3}`) },
		"BackendV6Data": func(a *Attrs) { a.BackendV6Data = nil },
		"field border":  func(a *Attrs) { a.BackendType, a.BackendData = "vxlan{", json.RawMessage(`"VNI":1}`) },
	} {
		c := base
		change(&c)
		if c.Digest(seed) == base.Digest(seed) {
			t.Errorf("%s changed, digest did not", name)
		}
	}
}
