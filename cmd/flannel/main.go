// Command flannel is the CNI plugin of type "flannel": it reads the node's
// subnet.env and delegates to bridge + host-local (see internal/cniplugin).
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/cniplugin"
	"github.com/flannelgo/flannel/internal/version"
)

func main() {
	p := &cniplugin.Plugin{}
	// Only ADD pins (connecting to nftables runs nft). Without the nft
	// binary on the host, flanneld pins new pods from their records
	// instead, dropping their frames until then.
	if os.Getenv("CNI_COMMAND") == "ADD" {
		if t, err := antispoof.NewTable(); err == nil {
			p.Pins = t
		}
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    p.Add,
		Del:    p.Del,
		Check:  p.Check,
		Status: p.Status,
	}, cniplugin.VersionInfo(), "CNI flannel plugin "+version.Version)
}
