package ec2server

import (
	"encoding/xml"
	"fmt"
	"slices"
	"strings"
)

type describeRouteTablesResp struct {
	XMLName xml.Name   `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ DescribeRouteTablesResponse"`
	Request string     `xml:"requestId"`
	Tables  []tableXML `xml:"routeTableSet>item"`
}

type tableXML struct {
	ID           string     `xml:"routeTableId"`
	VPCID        string     `xml:"vpcId"`
	Routes       []routeXML `xml:"routeSet>item"`
	Associations []assocXML `xml:"associationSet>item"`
}

type routeXML struct {
	Dst        string `xml:"destinationCidrBlock"`
	InstanceID string `xml:"instanceId,omitempty"`
	State      string `xml:"state"`
	Origin     string `xml:"origin"`
}

type assocXML struct {
	ID       string `xml:"routeTableAssociationId"`
	TableID  string `xml:"routeTableId"`
	SubnetID string `xml:"subnetId,omitempty"`
	Main     bool   `xml:"main"`
}

// describeRouteTables supports RouteTableId.N and the filters the backend
// uses; any other filter is refused as EC2 refuses unknown ones.
func (s *Server) describeRouteTables(f formValues) (any, *apiErr) {
	var ids []string
	for i := 1; f.Get(fmt.Sprintf("RouteTableId.%d", i)) != ""; i++ {
		ids = append(ids, f.Get(fmt.Sprintf("RouteTableId.%d", i)))
	}
	filters := map[string]string{}
	for i := 1; f.Get(fmt.Sprintf("Filter.%d.Name", i)) != ""; i++ {
		filters[f.Get(fmt.Sprintf("Filter.%d.Name", i))] = f.Get(fmt.Sprintf("Filter.%d.Value.1", i))
	}
	for name := range filters {
		if !slices.Contains([]string{"association.subnet-id", "association.main", "vpc-id"}, name) {
			return nil, fail(400, "InvalidParameterValue", "The filter '%s' is invalid", name)
		}
	}
	for _, id := range ids {
		if s.Tables[id] == nil {
			return nil, fail(400, "InvalidRouteTableID.NotFound", "The routeTable ID '%s' does not exist", id)
		}
	}
	resp := describeRouteTablesResp{Request: "req-1"}
	for _, id := range sortedKeys(s.Tables) {
		t := s.Tables[id]
		if (len(ids) > 0 && !slices.Contains(ids, id)) || !matches(t, filters) {
			continue
		}
		resp.Tables = append(resp.Tables, s.tableXML(t))
	}
	return resp, nil
}

func matches(t *Table, filters map[string]string) bool {
	for name, v := range filters {
		switch name {
		case "association.subnet-id":
			if !slices.Contains(t.Subnets, v) {
				return false
			}
		case "association.main":
			if fmt.Sprint(t.Main) != strings.ToLower(v) {
				return false
			}
		case "vpc-id":
			if t.VPCID != v {
				return false
			}
		}
	}
	return true
}

func (s *Server) tableXML(t *Table) tableXML {
	x := tableXML{ID: t.ID, VPCID: t.VPCID}
	for _, dst := range sortedKeys(t.Routes) {
		r := t.Routes[dst]
		state := "active"
		if in := s.Instances[r.InstanceID]; in == nil || in.Terminated {
			state = "blackhole"
		}
		x.Routes = append(x.Routes, routeXML{Dst: dst, InstanceID: r.InstanceID, State: state, Origin: "CreateRoute"})
	}
	if t.Main {
		x.Associations = append(x.Associations, assocXML{ID: "rtbassoc-main-" + t.ID, TableID: t.ID, Main: true})
	}
	for _, sub := range t.Subnets {
		x.Associations = append(x.Associations, assocXML{ID: "rtbassoc-" + sub, TableID: t.ID, SubnetID: sub})
	}
	return x
}
