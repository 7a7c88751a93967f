package daemon

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/flannelgo/flannel/internal/lease"
)

func TestSameAttrsIgnoresJSONLayout(t *testing.T) {
	a := lease.Attrs{PublicIP: netip.MustParseAddr("198.51.100.2"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ae:00:00:00:00:01"}`)}
	b := a
	b.BackendData = json.RawMessage(`{ "VNI": 1, "VtepMAC": "ae:00:00:00:00:01" }`)
	if !sameAttrs(a, b) {
		t.Error("the same data with other spacing counted as an overwrite")
	}
	b.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:97"}`)
	if sameAttrs(a, b) || vtepMAC(b) != "02:00:00:00:00:97" {
		t.Errorf("another VtepMAC not noticed (vtepMAC %q)", vtepMAC(b))
	}
}
