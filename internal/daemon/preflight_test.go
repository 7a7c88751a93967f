package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/iface"
	"github.com/flannelgo/flannel/internal/metrics"
)

// configManager serves one network config.
type configManager struct {
	fakeManager
	cfg *config.Config
}

func (c *configManager) GetNetworkConfig(context.Context) (*config.Config, error) { return c.cfg, nil }

// A misspelt Backend.Type and a failed preflight stop the start before an
// interface is chosen: the error is about them, not about --iface.
func TestBackendTypeCheckedBeforeTheInterface(t *testing.T) {
	noIface := iface.Options{Ifaces: []string{"fl-nosuch0"}}
	for _, tc := range []struct {
		name, conf, want string
		preflight        func(*config.Config) error
	}{
		{"unknown type", `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlna"}}`, `unknown backend type "vxlna" (supported: [host-gw vxlan])`, nil},
		{"preflight", `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`, "needs /dev/net/tun",
			func(*config.Config) error { return errors.New("needs /dev/net/tun") }},
		{"both pass", `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`, "choose external interface",
			func(*config.Config) error { return nil }},
	} {
		cfg, err := config.Parse([]byte(tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		reg := backend.Registry{"vxlan": nil, "host-gw": nil}
		d := New(Options{Iface: noIface, Preflight: tc.preflight}, &configManager{cfg: cfg}, reg, metrics.New())
		err = d.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Run = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// The start-up line names only the families in use: no "invalid Prefix"
// for an unset IPv6Network.
func TestConfigLineNamesOnlyTheFamiliesInUse(t *testing.T) {
	for conf, want := range map[string]string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`:                                                  "network config: Network=10.244.0.0/16 SubnetLen=24 backend=vxlan",
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`:      "network config: IPv6Network=fd00:10:244::/56 IPv6SubnetLen=64 backend=vxlan",
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`: "network config: Network=10.244.0.0/16 SubnetLen=24 IPv6Network=fd00:10:244::/56 IPv6SubnetLen=64 backend=udp",
	} {
		cfg, err := config.Parse([]byte(conf))
		if err != nil {
			t.Fatal(err)
		}
		if got := configLine(cfg); got != want || strings.Contains(got, "invalid") {
			t.Errorf("configLine(%s) = %q, want %q", conf, got, want)
		}
	}
}
