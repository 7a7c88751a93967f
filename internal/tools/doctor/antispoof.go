package doctor

import (
	"context"
	"strings"

	"github.com/flannelgo/flannel/internal/antispoof"
)

// checkAntiSpoofing finds pods that anti-spoofing cuts off: bridge ports
// with no record of the pod behind them.
func (f *facts) checkAntiSpoofing(ctx context.Context) Result {
	const name = "anti-spoofing"
	tbl, err := antispoof.NewTable()
	if err != nil {
		return ok(name, "off (no nftables here to hold it)")
	}
	ports, present, err := tbl.Unpinned(ctx)
	switch {
	case err != nil:
		return problem(name, "cannot read nftables table bridge "+antispoof.TableName,
			"run flannelctl doctor as root on the node", err.Error())
	case !present:
		return ok(name, "off (flanneld runs without --anti-spoofing; pods can forge source addresses)")
	case len(ports) > 0:
		return problem(name, "bridge ports whose pod flannel does not know: all their traffic is dropped",
			"recreate those pods (the flannel CNI plugin then records them), or run flanneld with --anti-spoofing=false",
			"ports: "+strings.Join(ports, ", "), "pod records: "+antispoof.RecordDir(f.in.SubnetFile))
	}
	return ok(name, "every pod on the bridge is pinned to its own addresses")
}
