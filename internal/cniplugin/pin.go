package cniplugin

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/flannelgo/flannel/internal/antispoof"
)

// pin records what the pod owns (its veth, MAC and addresses, from the
// bridge delegate's result) where flanneld reads it, and puts it into
// flanneld's anti-spoofing table at once, so the pod's first packet is
// judged by its own entries. Only the bridge delegate's pods have a veth
// on a bridge to pin. The record is required (without it a node with
// anti-spoofing drops all of the pod's traffic); the direct pin is not:
// flanneld pins from the record within a fraction of a second.
func (p *Plugin) pin(n *NetConf, conf map[string]any, typ string, res types.Result, args *skel.CmdArgs) error {
	if typ != "bridge" {
		return nil
	}
	bridge, _ := conf["bridge"].(string)
	if bridge == "" {
		bridge = antispoof.DefaultBridge
	}
	pod, err := antispoof.FromResult(res, args.ContainerID, bridge, args.Args)
	if err != nil {
		// Results before CNI 0.3.0 name no interfaces. Failing ADD would
		// break such conflists also where anti-spoofing is off; where it
		// is on, flanneld logs the port it cannot pin and drops its
		// traffic.
		fmt.Fprintf(os.Stderr, "flannel: no anti-spoofing record for container %s: %v\n", args.ContainerID, err)
		return nil
	}
	if err := antispoof.WriteRecord(antispoof.RecordDir(n.SubnetFile), pod); err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(),
			"flanneld's anti-spoofing needs this record to let the pod send from its addresses")
	}
	if p.Pins == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.Pins.Pin(ctx, pod); err != nil {
		fmt.Fprintf(os.Stderr, "flannel: %v; flanneld pins the pod from its record instead\n", err)
	}
	return nil
}
