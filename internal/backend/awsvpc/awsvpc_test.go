package awsvpc

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/harness/ec2server"
	"github.com/flannelgo/flannel/internal/lease"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// newVPC serves a VPC with a main table and a table for subnet-1 on
// loopback, and points the AWS SDK at it.
func newVPC(t *testing.T) *ec2server.Server {
	t.Helper()
	s := ec2server.New()
	s.Tables["rtb-main"] = &ec2server.Table{ID: "rtb-main", VPCID: "vpc-1", Main: true, Routes: map[string]*ec2server.Route{}}
	s.Tables["rtb-sub1"] = &ec2server.Table{ID: "rtb-sub1", VPCID: "vpc-1", Subnets: []string{"subnet-1"}, Routes: map[string]*ec2server.Route{}}
	for _, id := range []string{"a", "b", "c"} {
		s.Instances["i-"+id] = &ec2server.Instance{ID: "i-" + id, Region: "eu-test-1", ENI: "eni-" + id,
			SubnetID: "subnet-1", VPCID: "vpc-1", MAC: "02:00:00:00:00:0" + id, SourceDestCheck: true}
	}
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	api, md := listen(), listen()
	s.Serve(api, md)
	t.Setenv("AWS_ENDPOINT_URL_EC2", "http://"+api.Addr().String())
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://"+md.Addr().String())
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "")
	return s
}

// as makes the metadata service answer for instance id (all requests come
// from loopback here; in the e2e test each node has its own address).
func as(s *ec2server.Server, id string) {
	s.Lock()
	defer s.Unlock()
	for _, in := range s.Instances {
		in.Addr = netip.Addr{}
	}
	s.Instances[id].Addr = loopback
}

var testNet = netip.MustParsePrefix("10.244.0.0/16")

func start(t *testing.T, ctx context.Context, raw string, subnet string) (*network, error) {
	t.Helper()
	ext := &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", MTU: 9001}}
	b, err := New(ext, json.RawMessage(raw))
	if err != nil {
		return nil, err
	}
	nw, err := b.RegisterNetwork(ctx, &config.Config{EnableIPv4: true, Network: testNet})
	if err != nil {
		return nil, err
	}
	own := &lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: nw.LeaseAttrs()}
	return nw.(*network), nw.Activate(ctx, own)
}

func TestRoutesSourceDestCheckAndTableChoice(t *testing.T) {
	s := newVPC(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	as(s, "i-a")
	na, err := start(t, ctx, `{}`, "10.244.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	as(s, "i-b")
	if _, err := start(t, ctx, `{}`, "10.244.2.0/24"); err != nil {
		t.Fatal(err)
	}
	if got := s.RouteTarget("rtb-sub1", "10.244.1.0/24") + " " + s.RouteTarget("rtb-sub1", "10.244.2.0/24"); got != "i-a i-b" {
		t.Errorf("subnet table routes 10.244.1.0/24, 10.244.2.0/24 to %q, want i-a i-b", got)
	}
	s.Lock()
	if len(s.Tables["rtb-main"].Routes) != 0 || s.Instances["i-a"].SourceDestCheck || s.Instances["i-b"].SourceDestCheck || !s.Instances["i-c"].SourceDestCheck {
		t.Errorf("main table %v; source/dest check a=%v b=%v c=%v", s.Tables["rtb-main"].Routes,
			s.Instances["i-a"].SourceDestCheck, s.Instances["i-b"].SourceDestCheck, s.Instances["i-c"].SourceDestCheck)
	}
	s.Unlock()
	if got := string(na.LeaseAttrs().BackendData); got != `{"InstanceID":"i-a"}` {
		t.Errorf("BackendData = %s", got)
	}

	// Without a table of its own the subnet uses the VPC's main table.
	s.Lock()
	s.Tables["rtb-sub1"].Subnets = nil
	s.Unlock()
	as(s, "i-c")
	if _, err := start(t, ctx, `{}`, "10.244.3.0/24"); err != nil {
		t.Fatal(err)
	}
	if got := s.RouteTarget("rtb-main", "10.244.3.0/24"); got != "i-c" {
		t.Errorf("main table routes 10.244.3.0/24 to %q, want i-c", got)
	}
}

// A route pointed at another instance is put back, at the next check.
func TestWrongRouteCorrected(t *testing.T) {
	s := newVPC(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Tables["rtb-x"] = &ec2server.Table{ID: "rtb-x", VPCID: "vpc-1", Routes: map[string]*ec2server.Route{
		"10.244.1.0/24": {Dst: "10.244.1.0/24", InstanceID: "i-c"}}}
	as(s, "i-a")
	if _, err := start(t, ctx, `{"RouteTableID":["rtb-x"],"RouteCheckInterval":1}`, "10.244.1.0/24"); err != nil {
		t.Fatal(err)
	}
	if got := s.RouteTarget("rtb-x", "10.244.1.0/24"); got != "i-a" {
		t.Fatalf("at start the route points at %q, want i-a (replaced)", got)
	}
	s.Lock()
	s.Tables["rtb-x"].Routes["10.244.1.0/24"].InstanceID = "i-b"
	s.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for s.RouteTarget("rtb-x", "10.244.1.0/24") != "i-a" {
		if time.Now().After(deadline) {
			t.Fatalf("route still points at %q 5 s after it was changed by hand", s.RouteTarget("rtb-x", "10.244.1.0/24"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A departed node's route goes, unless the subnet has a new owner.
func TestDepartedNodeRouteRemoved(t *testing.T) {
	s := newVPC(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Tables["rtb-sub1"].Routes["10.244.2.0/24"] = &ec2server.Route{Dst: "10.244.2.0/24", InstanceID: "i-b"}
	s.Tables["rtb-sub1"].Routes["10.244.3.0/24"] = &ec2server.Route{Dst: "10.244.3.0/24", InstanceID: "i-c"}
	as(s, "i-a")
	na, err := start(t, ctx, `{}`, "10.244.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	gone := func(subnet, instance string) lease.Event {
		return lease.Event{Type: lease.Removed, Lease: lease.Lease{Subnet: netip.MustParsePrefix(subnet),
			Attrs: lease.Attrs{BackendType: TypeName, BackendData: json.RawMessage(`{"InstanceID":"` + instance + `"}`)}}}
	}
	// 10.244.3.0/24 was i-b's once, but is i-c's now: it stays.
	na.HandleEvents(ctx, []lease.Event{gone("10.244.2.0/24", "i-b"), gone("10.244.3.0/24", "i-b")})
	if got := s.RouteTarget("rtb-sub1", "10.244.2.0/24"); got != "" {
		t.Errorf("departed node's route still points at %q", got)
	}
	if got := s.RouteTarget("rtb-sub1", "10.244.3.0/24"); got != "i-c" {
		t.Errorf("the new owner's route was touched: %q", got)
	}
}

// API failures name the call and what to do.
func TestAPIErrorsNameCallAndFix(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		breakIt   func(*ec2server.Server)
		want      []string
	}{
		{"no permission", `{}`, func(s *ec2server.Server) { s.Deny["CreateRoute"] = true },
			[]string{"ec2 CreateRoute", "UnauthorizedOperation", "needs permission ec2:CreateRoute"}},
		{"no source/dest permission", `{}`, func(s *ec2server.Server) { s.Deny["ModifyInstanceAttribute"] = true },
			[]string{"ec2 ModifyInstanceAttribute", "needs permission ec2:ModifyInstanceAttribute"}},
		{"no such table", `{"RouteTableID":"rtb-nope"}`, func(*ec2server.Server) {},
			[]string{"InvalidRouteTableID.NotFound", "check Backend.RouteTableID"}},
		{"route limit", `{}`, func(s *ec2server.Server) { s.RouteLimit = 0 },
			[]string{"ec2 CreateRoute", "RouteLimitExceeded", "route table is full"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newVPC(t)
			tc.breakIt(s)
			as(s, "i-a")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := start(t, ctx, tc.raw, "10.244.1.0/24")
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
		})
	}
}
