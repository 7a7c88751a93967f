package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/droplog"
	"github.com/flannelgo/flannel/internal/metrics"
	"github.com/flannelgo/flannel/internal/netpol"
)

// dropLogOptions are the policy drop log's flags (none upstream).
type dropLogOptions struct {
	group  uint
	rate   int
	output string
}

func (d *dropLogOptions) addFlags(fs *flag.FlagSet) {
	fs.UintVar(&d.group, "policy-drop-log-group", 100, "with --network-policy, the NFLOG group the kernel logs a sample of the packets network policy (and anti-spoofing) drops to, for `flannelctl policy drops`; 0 turns the drop log off; not an upstream flag")
	fs.IntVar(&d.rate, "policy-drop-log-rate", 100, "the most dropped packets per second and direction the kernel logs (its own rate limit: a flood costs flanneld no more; the drop counters count every packet); not an upstream flag")
	fs.StringVar(&d.output, "policy-drop-log-output", "", "also write each drop record as a JSON line: \"log\" to flanneld's log, or a file path (appended); empty: only served at /policy/drops; not an upstream flag")
}

// dropLog starts the drop log when its group is set and returns the rules
// the policy controller syncs: the table, behind the keeper of the model
// that names the records' pods and policies.
func dropLog(ctx context.Context, o *options, tbl *netpol.Table, m *metrics.Metrics, nodeName func(context.Context) (string, error)) (netpol.Rules, *droplog.Log, error) {
	if o.dropLog.group == 0 {
		return tbl, nil, nil
	}
	if o.dropLog.group > 65535 {
		return nil, nil, fmt.Errorf("--policy-drop-log-group %d: an NFLOG group is 1 to 65535", o.dropLog.group)
	}
	// Policy is enforced without the log: a kernel without nfnetlink_log,
	// or a group another program reads, costs the records, not the node.
	conn, err := droplog.Listen(uint16(o.dropLog.group), 100*time.Millisecond)
	if err != nil {
		klog.Warningf("policy drop log off (flannelctl policy drops will have nothing): %v", err)
		return tbl, nil, nil
	}
	sink, err := dropSink(ctx, o.dropLog.output)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	node, err := nodeName(ctx)
	if err != nil {
		klog.Warningf("policy drop log: records will not name this node: %v", err)
	}
	keeper := &droplog.ModelKeeper{Next: tbl}
	log := droplog.New(node, keeper, sink)
	if err := m.Register(log.Collectors()...); err != nil {
		conn.Close()
		return nil, nil, err
	}
	m.Handle(droplog.Path, log.Handler(o.dropLog.rate))
	tbl.SetDropLog(netpol.DropLog{Group: uint16(o.dropLog.group), Rate: o.dropLog.rate})
	go log.Run(ctx, conn)
	klog.Infof("policy drop log: NFLOG group %d, at most %d records per second and direction", o.dropLog.group, o.dropLog.rate)
	return keeper, log, nil
}

func dropSink(ctx context.Context, output string) (io.Writer, error) {
	switch output {
	case "":
		return nil, nil
	case "log":
		return droplog.KlogSink(), nil
	}
	f, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("--policy-drop-log-output: %w", err)
	}
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	return f, nil
}

// spoofDropLog has the anti-spoofing table log a sample of its drops to
// the same group, when the drop log runs.
func spoofDropLog(o *options, drops *droplog.Log, tbl *antispoof.Table, ctl *antispoof.Controller) {
	if drops == nil {
		return
	}
	tbl.SetDropLog(uint16(o.dropLog.group), o.dropLog.rate)
	drops.RecordSpoofing(ctl)
}
