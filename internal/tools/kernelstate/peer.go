package kernelstate

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
)

// VXLANTables is one reading of a VXLAN device's routes, neighbours and
// FDB, taken together so that many peers are judged against one snapshot.
type VXLANTables struct {
	Dev    *Device
	Routes []Route
	Neighs []Neighbour
	FDB    []FDBEntry
}

// VXLAN reads dev's tables for the family of the peers to judge.
func (r *Reader) VXLAN(dev string, v6 bool) (*VXLANTables, error) {
	d, err := r.Device(dev)
	if err != nil {
		return nil, err
	}
	family := familyOf(netip.IPv4Unspecified())
	if v6 {
		family = familyOf(netip.IPv6Unspecified())
	}
	t := &VXLANTables{Dev: d}
	if t.Routes, err = r.Routes(dev, family); err != nil {
		return nil, err
	}
	if t.Neighs, err = r.Neighbours(d.Index, family); err != nil {
		return nil, err
	}
	if t.FDB, err = r.FDB(d.Index); err != nil {
		return nil, err
	}
	return t, nil
}

// VXLANPeer is what the kernel holds for one remote VXLAN lease: by
// flannel's contract, route `<subnet> via <subnet address> dev flannel.N
// onlink`, permanent neighbour `<subnet address> lladdr <VtepMAC>`, FDB
// `<VtepMAC> dst <PublicIP>`.
type VXLANPeer struct {
	Subnet    netip.Prefix
	PublicIP  netip.Addr
	Route     *Route     // the route to Subnet on the device, if any
	Neighbour *Neighbour // the entry for Subnet's address, if any
	FDB       []FDBEntry // entries for the neighbour's MAC or towards PublicIP
}

// Peer picks out what the tables hold for the peer with subnet at publicIP.
func (t *VXLANTables) Peer(subnet netip.Prefix, publicIP netip.Addr) VXLANPeer {
	p := VXLANPeer{Subnet: subnet, PublicIP: publicIP}
	for i, rt := range t.Routes {
		if rt.Dst == subnet {
			p.Route = &t.Routes[i]
		}
	}
	for i, n := range t.Neighs {
		if n.IP == subnet.Addr() {
			p.Neighbour = &t.Neighs[i]
		}
	}
	for _, f := range t.FDB {
		if f.Dst == publicIP || (p.Neighbour != nil && bytes.Equal(f.MAC, p.Neighbour.MAC)) {
			p.FDB = append(p.FDB, f)
		}
	}
	return p
}

// VXLANPeer reads dev's tables and picks out one peer.
func (r *Reader) VXLANPeer(dev string, subnet netip.Prefix, publicIP netip.Addr) (VXLANPeer, error) {
	t, err := r.VXLAN(dev, subnet.Addr().Is6())
	if err != nil {
		return VXLANPeer{}, err
	}
	return t.Peer(subnet, publicIP), nil
}

// RouteOK: the route goes via the subnet's address, as flannel programs it.
func (p VXLANPeer) RouteOK() bool { return p.Route != nil && p.Route.Gw == p.Subnet.Addr() }

// NeighOK: a permanent entry, holding wantMAC when that is given.
func (p VXLANPeer) NeighOK(wantMAC net.HardwareAddr) bool {
	return p.Neighbour != nil && p.Neighbour.Permanent() && (wantMAC == nil || bytes.Equal(p.Neighbour.MAC, wantMAC))
}

// FDBOK: an entry sends the VTEP MAC (wantMAC, else the neighbour's MAC,
// else any) to PublicIP.
func (p VXLANPeer) FDBOK(wantMAC net.HardwareAddr) bool {
	if wantMAC == nil && p.Neighbour != nil {
		wantMAC = p.Neighbour.MAC
	}
	for _, f := range p.FDB {
		if f.Dst == p.PublicIP && (wantMAC == nil || bytes.Equal(f.MAC, wantMAC)) {
			return true
		}
	}
	return false
}

// Problems lists, in `ip` syntax, each entry that is missing or wrong for
// a peer whose lease says VtepMAC wantMAC; empty when all three are right.
func (p VXLANPeer) Problems(dev string, wantMAC net.HardwareAddr) []string {
	var out []string
	gw := p.Subnet.Addr()
	switch {
	case p.Route == nil:
		out = append(out, fmt.Sprintf("no route %s via %s dev %s onlink", p.Subnet, gw, dev))
	case !p.RouteOK():
		out = append(out, fmt.Sprintf("route is %q, want %s via %s dev %s onlink", p.Route, p.Subnet, gw, dev))
	}
	switch {
	case p.Neighbour == nil:
		out = append(out, fmt.Sprintf("no neighbour %s lladdr %s dev %s PERMANENT", gw, wantMAC, dev))
	case !p.NeighOK(wantMAC):
		out = append(out, fmt.Sprintf("neighbour is %q, want %s lladdr %s PERMANENT", p.Neighbour, gw, wantMAC))
	}
	if !p.FDBOK(wantMAC) {
		have := "none"
		if len(p.FDB) > 0 {
			have = fmt.Sprint(p.FDB)
		}
		out = append(out, fmt.Sprintf("no FDB entry %s dst %s dev %s (have %s)", wantMAC, p.PublicIP, dev, have))
	}
	return out
}

// HostGWRoute returns the route to subnet (any device), if any. By the
// host-gw contract it goes via the peer's PublicIP on the external device.
func (r *Reader) HostGWRoute(subnet netip.Prefix) (*Route, error) {
	routes, err := r.Routes("", familyOf(subnet.Addr()))
	if err != nil {
		return nil, err
	}
	for i, rt := range routes {
		if rt.Dst == subnet {
			return &routes[i], nil
		}
	}
	return nil, nil
}
