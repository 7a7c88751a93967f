package netpol

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in, target string
		port       *PortRange
		err        string
	}{
		{"x/a", "x/a", nil, ""},
		{"x/a:80/TCP", "x/a", &PortRange{Proto: TCP, From: 80, To: 80}, ""},
		{"x/a:53/udp", "x/a", &PortRange{Proto: UDP, From: 53, To: 53}, ""},
		{"x/a:8080", "x/a", &PortRange{Proto: TCP, From: 8080, To: 8080}, ""},
		{"10.244.1.5:9/SCTP", "10.244.1.5", &PortRange{Proto: SCTP, From: 9, To: 9}, ""},
		{"fd00::1", "fd00::1", nil, ""},
		{"x/a:http/TCP", "", nil, "want PORT/PROTO"},
		{"x/a:80/ICMP", "", nil, "want TCP, UDP or SCTP"},
	} {
		target, ports, err := ParseTarget(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || target != tc.target || (tc.port == nil) != (len(ports) == 0) || (tc.port != nil && ports[0] != *tc.port) {
			t.Errorf("%q: %q %v %v, want %q %v", tc.in, target, ports, err, tc.target, tc.port)
		}
	}
}
