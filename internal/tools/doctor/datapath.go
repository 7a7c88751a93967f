package doctor

import (
	"context"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/datapath/ebpf"
)

// checkDatapath shows which path each pod of this node takes, the eBPF
// fast path's programs or the kernel's bridge and netfilter, and finds a
// node where that differs from what the network config asks for.
func (f *facts) checkDatapath(context.Context) Result {
	const name = "data path"
	if f.cfg == nil {
		return skip(name, "the network config could not be read")
	}
	// A missing record directory is a node without pods yet.
	pods, _ := antispoof.ReadPods(antispoof.RecordDir(f.in.SubnetFile), "")
	var ev, wrong []string
	for _, p := range pods {
		l, err := netlink.LinkByName(p.HostIf)
		if err != nil {
			continue // a record of a pod that is gone
		}
		path, err := ebpf.Path(l.Attrs().Index)
		if err != nil {
			return problem(name, "cannot read the programs attached to "+p.HostIf, "run flannelctl doctor as root on the node", err.Error())
		}
		line := fmt.Sprintf("%s %v: %s", p, p.IPs, path)
		ev = append(ev, line)
		if (path == "kernel") != (f.cfg.Datapath != config.DatapathEBPF) {
			wrong = append(wrong, line)
		}
	}
	slices.Sort(ev)
	switch {
	case len(wrong) > 0 && f.cfg.Datapath == config.DatapathEBPF:
		return problem(name, "the config asks for the eBPF fast path, but these pods have no program attached",
			"check that flanneld runs and read its log for \"eBPF fast path\"; pods keep working on the kernel path meanwhile", wrong...)
	case len(wrong) > 0:
		return problem(name, "the config asks for the kernel path, but fast-path programs are still attached",
			"restart flanneld: on the kernel path it removes programs an earlier run left", wrong...)
	case f.cfg.Datapath == config.DatapathEBPF:
		return ok(name, fmt.Sprintf("eBPF fast path attached for all %d pods (a pod a policy selects still takes the kernel path packet by packet)", len(ev)), ev...)
	}
	return ok(name, fmt.Sprintf("kernel path (bridge and netfilter) for all %d pods", len(ev)), ev...)
}
