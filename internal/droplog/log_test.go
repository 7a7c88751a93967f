package droplog

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/netpol"
)

type noRules struct{}

func (noRules) Sync(context.Context, *netpol.Model) error { return nil }

// ipv4TCP is the first bytes of a TCP SYN from src to dst:port.
func ipv4TCP(src, dst string, port uint16) []byte {
	b := make([]byte, 24)
	b[0], b[9] = 0x45, 6
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	b[22], b[23] = byte(port>>8), byte(port)
	return b
}

func keeper(t *testing.T) *ModelKeeper {
	client, server := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.1.3")
	m := &netpol.Model{
		Pods: map[netip.Addr]netpol.PodRef{
			client: {Namespace: "shop", Name: "client", IP: client},
			server: {Namespace: "db", Name: "server", IP: server},
		},
	}
	m.Rules[netpol.Ingress] = map[netip.Addr]*netpol.PodRules{server: {Pod: m.Pods[server], Isolated: true, Policies: []string{"db/deny-all"}}}
	k := &ModelKeeper{Next: noRules{}}
	if err := k.Sync(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return k
}

// A logged packet becomes a record naming both pods and the policy that
// isolates the destination; the endpoint serves it, filtered by namespace.
func TestRecordNamesPodsAndPolicies(t *testing.T) {
	l := New("n1", keeper(t), nil)
	r, ok := l.record(Packet{Time: time.Unix(1, 0), Prefix: netpol.LogPrefixIngress, Payload: ipv4TCP("10.244.1.2", "10.244.1.3", 5432)})
	if !ok || r.Source.String() != "shop/client" || r.Dest.String() != "db/server" || r.Proto != "TCP" || r.Port != 5432 ||
		!slices.Equal(r.Policies, []string{"db/deny-all"}) || r.Direction != "ingress" {
		t.Fatalf("record %+v", r)
	}
	if _, ok := l.record(Packet{Prefix: "someone else", Payload: ipv4TCP("10.244.1.2", "10.244.1.3", 1)}); ok {
		t.Fatal("a packet logged by another rule became a record")
	}
	l.Add(r)
	outside := r
	outside.Source, outside.Dest = Endpoint{IP: netip.MustParseAddr("203.0.113.9")}, Endpoint{IP: netip.MustParseAddr("203.0.113.10")}
	l.Add(outside)
	srv := httptest.NewServer(l.Handler(100))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + Path + "?namespace=db")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get(RateHeader) != "100" {
		t.Errorf("rate header %q", resp.Header.Get(RateHeader))
	}
	var got []Record
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		got = append(got, rec)
	}
	if len(got) != 1 || got[0].Dest.Pod != "server" || got[0].Node != "n1" {
		t.Fatalf("served %+v", got)
	}
}

// The ring keeps the latest records in order.
func TestRingKeepsLatest(t *testing.T) {
	l := New("", nil, nil)
	for i := range ringSize + 5 {
		l.Add(Record{Port: uint16(i)})
	}
	got := l.Latest()
	if len(got) != ringSize || got[0].Port != 5 || got[len(got)-1].Port != ringSize+4 {
		t.Fatalf("kept %d, first %d, last %d", len(got), got[0].Port, got[len(got)-1].Port)
	}
}

type fakePorts map[string][2]string

func (f fakePorts) PodOf(port string) (string, string) { return f[port][0], f[port][1] }

// A frame anti-spoofing logged names its sender by the port it came in
// on, keeps the forged address, and names the destination pod.
func TestRecordSpoofed(t *testing.T) {
	l := New("n1", keeper(t), nil)
	p := Packet{Prefix: antispoof.LogPrefix, InDev: 1, Payload: ipv4TCP("10.244.9.9", "10.244.1.3", 80)}
	if _, ok := l.record(p); ok {
		t.Fatal("recorded an anti-spoofing drop before RecordSpoofing")
	}
	l.RecordSpoofing(fakePorts{"lo": {"shop", "mallory"}}) // ifindex 1 is lo
	r, ok := l.record(p)
	if !ok || r.Reason != "anti-spoofing" || r.Source.String() != "shop/mallory" || r.Source.IP.String() != "10.244.9.9" ||
		r.Dest.String() != "db/server" || len(r.Policies) != 0 {
		t.Fatalf("record %+v", r)
	}
}
