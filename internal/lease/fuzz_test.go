package lease

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// Seeds: what upstream writes, and the hostile cases of issue 15 (keys
// outside the network or on the underlay, implausible addresses, junk).
var keySeeds = []string{
	"10.244.1.0-24", "10.244.1.0-24&fd00:10:244:1::-64", "fd00:10:244:1::-64",
	"198.51.100.0-24", "0.0.0.0-0", "10.244.1.1-24", "10.244.1.0-33", "10.244.1.0--1",
	"10.244.1.0-24&10.244.2.0-24", "fe80::%eth0-64", "::ffff:10.244.1.0-120", "-", "&", "",
	"10.244.1.0-24&", strings.Repeat("1", 200),
}

func FuzzParseKey(f *testing.F) {
	for _, s := range keySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		v4, v6, err := ParseBoundedKey(key)
		if err != nil {
			if len(err.Error()) > 12*MaxKeyLen { // %q may quadruple each byte, and parts are quoted twice
				t.Fatalf("error of %d bytes for a %d-byte key: the log line is not bounded", len(err.Error()), len(key))
			}
			return
		}
		if !v4.IsValid() && !v6.IsValid() {
			t.Fatalf("%q parsed to no subnet at all", key)
		}
		if v4.IsValid() && !v4.Addr().Is4() || v6.IsValid() && v6.Addr().Is4() {
			t.Fatalf("%q: families mixed up: %v %v", key, v4, v6)
		}
		if v4 != v4.Masked() || v6 != v6.Masked() {
			t.Fatalf("%q: accepted a key that is not a network address: %v %v", key, v4, v6)
		}
		// The key we would write for these subnets parses back to them.
		b4, b6, err := ParseKey(MakeKey(v4, v6))
		if err != nil || b4 != v4 || b6 != v6 {
			t.Fatalf("%q -> %v %v -> %q -> %v %v %v", key, v4, v6, MakeKey(v4, v6), b4, b6, err)
		}
	})
}

var valueSeeds = []string{
	`{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:11:22:33:44:55"}}`,
	`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"ae:11:22:33:44:55"}}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"host-gw"}`,
	`{"PublicIP":"127.0.0.1","BackendType":"vxlan"}`, `{"PublicIP":"224.0.0.1"}`, `{"PublicIP":"169.254.1.1"}`,
	`{"PublicIP":"not an address"}`, `{"PublicIP":12}`, `{"BackendData":"x"}`, `null`, `[]`, ``, `{`,
	`{"PublicIP":"fe80::1%eth0"}`, strings.Repeat("A", MaxValueLen+1),
}

func FuzzDecodeValue(f *testing.F) {
	for _, s := range valueSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		a, err := DecodeValue(value)
		if err != nil {
			if len(err.Error()) > 2*quoteLen+300 {
				t.Fatalf("error of %d bytes for a %d-byte value: the log line is not bounded", len(err.Error()), len(value))
			}
			return
		}
		if len(value) > MaxValueLen {
			t.Fatalf("accepted a value of %d bytes", len(value))
		}
		// What we decode, we can write back in upstream's form and read
		// again unchanged.
		out, err := a.MarshalJSON()
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", value, err)
		}
		b, err := DecodeValue(out)
		if err != nil {
			t.Fatalf("re-decode %q: %v", out, err)
		}
		if a.PublicIP != b.PublicIP || a.PublicIPv6 != b.PublicIPv6 || a.BackendType != b.BackendType ||
			!bytes.Equal(canonical(t, a.BackendData), canonical(t, b.BackendData)) {
			t.Fatalf("round trip changed %+v into %+v", a, b)
		}
	})
}

// canonical is raw in the form encoding/json writes a RawMessage: compact,
// with <, >, & and U+2028/U+2029 escaped as \u00XX (as upstream's
// json.Marshal writes them too), so that equal data compares equal.
func canonical(t *testing.T, raw []byte) []byte {
	if len(raw) == 0 {
		return nil
	}
	var compacted, escaped bytes.Buffer
	if err := json.Compact(&compacted, raw); err != nil {
		t.Fatalf("BackendData %q is not JSON: %v", raw, err)
	}
	json.HTMLEscape(&escaped, compacted.Bytes())
	return escaped.Bytes()
}
