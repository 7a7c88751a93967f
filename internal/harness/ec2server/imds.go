package ec2server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

const imdsToken = "imds-session-token"

// imds answers IMDSv2: a PUT for a session token, then GETs that carry it.
// The instance is the one whose address the request comes from.
func (s *Server) imds(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "IMDSv2 needs a PUT with a TTL", http.StatusBadRequest)
			return
		}
		// The SDK reads the token's lifetime back from this header.
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		_, _ = w.Write([]byte(imdsToken))
		return
	}
	if r.Header.Get("X-aws-ec2-metadata-token") != imdsToken {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	in := s.instanceAt(r.RemoteAddr)
	path, found := strings.CutPrefix(r.URL.Path, "/latest/meta-data/")
	if in == nil || !found {
		http.NotFound(w, r)
		return
	}
	if v, ok := metadata(in, path); ok {
		_, _ = w.Write([]byte(v))
		return
	}
	http.NotFound(w, r)
}

func (s *Server) instanceAt(remote string) *Instance {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return nil
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	s.Lock()
	defer s.Unlock()
	for _, in := range s.Instances {
		if in.Addr == addr.Unmap() {
			return in
		}
	}
	return nil
}

func metadata(in *Instance, path string) (string, bool) {
	macBase := "network/interfaces/macs/" + in.MAC + "/"
	switch path {
	case "placement/region":
		return in.Region, true
	case "instance-id":
		return in.ID, true
	case "mac":
		return in.MAC, true
	case macBase + "interface-id":
		return in.ENI, true
	case macBase + "subnet-id":
		return in.SubnetID, true
	case macBase + "vpc-id":
		return in.VPCID, true
	}
	return "", false
}
