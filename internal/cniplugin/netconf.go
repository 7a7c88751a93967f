// Package cniplugin implements the flannel CNI plugin ("type": "flannel"):
// it turns subnet.env, written by flanneld, into the configuration of a
// delegate plugin (bridge + host-local by default) and runs that delegate.
package cniplugin

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults match upstream flannel's CNI plugin, so existing conflists work.
const (
	DefaultSubnetFile = "/run/flannel/subnet.env"
	DefaultDataDir    = "/var/lib/cni/flannel"
	// DefaultSubnetFileWait is how long ADD waits for flanneld to write
	// subnet.env before it fails: kubelet's first pods on a booting node
	// then succeed instead of failing until its next retry.
	DefaultSubnetFileWait = 10 * time.Second
)

// VersionInfo lists the CNI spec versions the plugin speaks: all of them
// from 0.1.0 on, as upstream's plugin, so old conflists keep working.
func VersionInfo() version.PluginInfo {
	return version.All
}

// NetConf is the flannel plugin's network configuration. The generic maps
// (delegate, ipam, runtimeConfig) are kept loose on purpose: their keys
// belong to the delegate plugins and are passed through untouched.
type NetConf struct {
	CNIVersion string `json:"cniVersion,omitempty"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	SubnetFile string `json:"subnetFile,omitempty"`
	DataDir    string `json:"dataDir,omitempty"`
	// SubnetFileWait ("10s", "0s": no wait) bounds ADD's wait for
	// subnet.env; a flannel-go extension that upstream's plugin ignores.
	SubnetFileWait string `json:"subnetFileWait,omitempty"`
	subnetWait     time.Duration
	Delegate       map[string]any  `json:"delegate,omitempty"`
	IPAM           map[string]any  `json:"ipam,omitempty"`
	RuntimeConfig  map[string]any  `json:"runtimeConfig,omitempty"`
	PrevResult     json.RawMessage `json:"prevResult,omitempty"`
}

// ParseNetConf decodes the plugin's stdin and fills in the defaults.
// It does not judge the delegate map: DEL must work with whatever ADD saved,
// even when today's configuration would be refused.
func ParseNetConf(data []byte) (*NetConf, error) {
	n := &NetConf{}
	if err := json.Unmarshal(data, n); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("failed to parse flannel CNI network config: %v", err), "")
	}
	if n.SubnetFile == "" {
		n.SubnetFile = DefaultSubnetFile
	}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	n.subnetWait = DefaultSubnetFileWait
	if n.SubnetFileWait != "" {
		d, err := time.ParseDuration(n.SubnetFileWait)
		if err != nil || d < 0 {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("flannel CNI network config: subnetFileWait %q is not a duration like \"10s\"", n.SubnetFileWait), "")
		}
		n.subnetWait = d
	}
	return n, nil
}
