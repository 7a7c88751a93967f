// Package ec2server is a small, stateful stand-in for the two AWS services
// the aws-vpc backend talks to, for tests: the EC2 Query API (the five
// calls the backend makes, answered in EC2's XML, errors included) and
// IMDSv2. No EC2 emulator package is reachable from these machines, so the
// tests run the real AWS SDK against this server on the wire.
package ec2server

import (
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
)

// Instance is one EC2 instance with a single network interface.
type Instance struct {
	ID, Region, ENI, SubnetID, VPCID, MAC string
	// Addr is the instance's private address: IMDS answers a request from
	// this address about this instance.
	Addr            netip.Addr
	SourceDestCheck bool
	// Terminated instances make their routes blackholes, as in EC2.
	Terminated bool
}

// Route is one route of a table.
type Route struct {
	Dst, InstanceID string
}

// Table is a VPC route table.
type Table struct {
	ID, VPCID string
	Main      bool
	Subnets   []string          // explicitly associated subnets
	Routes    map[string]*Route // by destination CIDR
}

// Server holds the state; its maps may be read and changed under Lock.
type Server struct {
	sync.Mutex
	Instances map[string]*Instance
	Tables    map[string]*Table
	// Deny makes a call fail with UnauthorizedOperation, as a missing IAM
	// permission does.
	Deny map[string]bool
	// RouteLimit is the most routes a table holds (EC2's default is 50).
	RouteLimit int
	// Calls lists every EC2 call made, in order ("CreateRoute rtb-1 10.244.1.0/24").
	Calls []string
}

// New returns an empty server with EC2's default route limit.
func New() *Server {
	return &Server{Instances: map[string]*Instance{}, Tables: map[string]*Table{}, Deny: map[string]bool{}, RouteLimit: 50}
}

// Serve answers EC2 calls on ec2 and IMDS on md until they are closed.
func (s *Server) Serve(ec2, md net.Listener) {
	go func() { _ = http.Serve(ec2, http.HandlerFunc(s.ec2)) }()
	go func() { _ = http.Serve(md, http.HandlerFunc(s.imds)) }()
}

// RouteTarget returns the instance a table routes dst to, "" if none.
func (s *Server) RouteTarget(table, dst string) string {
	s.Lock()
	defer s.Unlock()
	if t := s.Tables[table]; t != nil && t.Routes[dst] != nil {
		return t.Routes[dst].InstanceID
	}
	return ""
}

// ec2Error is EC2's error document.
type ec2Error struct {
	XMLName   xml.Name `xml:"Response"`
	Code      string   `xml:"Errors>Error>Code"`
	Message   string   `xml:"Errors>Error>Message"`
	RequestID string   `xml:"RequestID"`
}

type apiErr struct {
	status    int
	code, msg string
}

func fail(status int, code, format string, args ...any) *apiErr {
	return &apiErr{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) ec2(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	action := r.Form.Get("Action")
	s.Lock()
	resp, aerr := s.dispatch(action, r.Form)
	s.Unlock()
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	if aerr != nil {
		w.WriteHeader(aerr.status)
		_ = xml.NewEncoder(w).Encode(ec2Error{Code: aerr.code, Message: aerr.msg, RequestID: "req-1"})
		return
	}
	_ = xml.NewEncoder(w).Encode(resp)
}

func (s *Server) dispatch(action string, f formValues) (any, *apiErr) {
	s.Calls = append(s.Calls, strings.TrimSpace(action+" "+f.Get("RouteTableId")+" "+f.Get("DestinationCidrBlock")))
	if s.Deny[action] {
		return nil, fail(403, "UnauthorizedOperation", "You are not authorized to perform this operation.")
	}
	switch action {
	case "ModifyInstanceAttribute":
		return s.modifyInstanceAttribute(f)
	case "DescribeRouteTables":
		return s.describeRouteTables(f)
	case "CreateRoute", "ReplaceRoute":
		return s.putRoute(action, f)
	case "DeleteRoute":
		return s.deleteRoute(f)
	}
	return nil, fail(400, "InvalidAction", "The action %s is not valid for this web service.", action)
}

type formValues interface{ Get(string) string }

type returnResp struct {
	XMLName xml.Name
	Request string `xml:"requestId"`
	Return  bool   `xml:"return"`
}

func ok(action string) returnResp {
	return returnResp{XMLName: xml.Name{Space: "http://ec2.amazonaws.com/doc/2016-11-15/", Local: action + "Response"}, Request: "req-1", Return: true}
}

func (s *Server) modifyInstanceAttribute(f formValues) (any, *apiErr) {
	in := s.Instances[f.Get("InstanceId")]
	if in == nil {
		return nil, fail(400, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", f.Get("InstanceId"))
	}
	switch f.Get("SourceDestCheck.Value") {
	case "true":
		in.SourceDestCheck = true
	case "false":
		in.SourceDestCheck = false
	default:
		return nil, fail(400, "InvalidParameterCombination", "no attribute given")
	}
	return ok("ModifyInstanceAttribute"), nil
}

func (s *Server) putRoute(action string, f formValues) (any, *apiErr) {
	t := s.Tables[f.Get("RouteTableId")]
	if t == nil {
		return nil, fail(400, "InvalidRouteTableID.NotFound", "The routeTable ID '%s' does not exist", f.Get("RouteTableId"))
	}
	dst, target := f.Get("DestinationCidrBlock"), f.Get("InstanceId")
	if _, err := netip.ParsePrefix(dst); err != nil {
		return nil, fail(400, "InvalidParameterValue", "Value (%s) for parameter destinationCidrBlock is invalid", dst)
	}
	if s.Instances[target] == nil {
		return nil, fail(400, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", target)
	}
	existing := t.Routes[dst]
	switch {
	case action == "CreateRoute" && existing != nil:
		return nil, fail(400, "RouteAlreadyExists", "The route identified by %s already exists.", dst)
	case action == "ReplaceRoute" && existing == nil:
		return nil, fail(400, "InvalidRoute.NotFound", "no route with destination-cidr-block %s in route table %s", dst, t.ID)
	case action == "CreateRoute" && len(t.Routes) >= s.RouteLimit:
		return nil, fail(400, "RouteLimitExceeded", "The maximum number of routes has been reached.")
	}
	t.Routes[dst] = &Route{Dst: dst, InstanceID: target}
	return ok(action), nil
}

func (s *Server) deleteRoute(f formValues) (any, *apiErr) {
	t := s.Tables[f.Get("RouteTableId")]
	if t == nil {
		return nil, fail(400, "InvalidRouteTableID.NotFound", "The routeTable ID '%s' does not exist", f.Get("RouteTableId"))
	}
	dst := f.Get("DestinationCidrBlock")
	if t.Routes[dst] == nil {
		return nil, fail(400, "InvalidRoute.NotFound", "no route with destination-cidr-block %s in route table %s", dst, t.ID)
	}
	delete(t.Routes, dst)
	return ok("DeleteRoute"), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
