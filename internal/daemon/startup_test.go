package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
)

// In iptables mode flanneld refuses to start without br_netfilter, for
// each family the network has, as upstream does, and says how to load the
// module. In nftables mode it does not check, as upstream.
func TestBrNetfilterRequired(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   []string
		v4, v6  bool
		nft     bool
		wantErr string
	}{
		{"IPv4, module loaded", []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"}, true, false, false, ""},
		{"IPv4, module missing", nil, true, false, false, "bridge-nf-call-iptables"},
		{"IPv6 only, module missing", nil, false, true, false, "bridge-nf-call-ip6tables"},
		{"dual stack, only the IPv4 file", []string{"bridge-nf-call-iptables"}, true, true, false, "bridge-nf-call-ip6tables"},
		{"dual stack, module loaded", []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"}, true, true, false, ""},
		{"nftables, IPv4, module missing", nil, true, false, true, ""},
		{"nftables, dual stack, module missing", nil, true, true, true, ""},
	} {
		procSys := t.TempDir()
		dir := filepath.Join(procSys, "net", "bridge")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range tc.files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := checkBrNetfilter(procSys, &config.Config{EnableIPv4: tc.v4, EnableIPv6: tc.v6, EnableNFTables: tc.nft})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("%s: no error, want one naming %s", tc.name, tc.wantErr)
		case tc.wantErr != "":
			for _, want := range []string{tc.wantErr, "modprobe br_netfilter"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: error %q does not contain %q", tc.name, err, want)
				}
			}
		}
	}
}
