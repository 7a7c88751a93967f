package policy

import (
	"context"
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

// DropLogOptions are the policy drop log's settings (flanneld's
// --policy-drop-log-* flags, none upstream).
type DropLogOptions struct {
	Group  uint   // NFLOG group; 0: no drop log
	Rate   int    // most records per second and direction (a kernel limit)
	Output string // "", "log" (flanneld's log) or a file for JSON lines
}

// dropLog starts the drop log when its group is set and returns the rules
// the policy controller syncs: the table, behind the keeper of the model
// that names the records' pods and policies.
func dropLog(ctx context.Context, dl DropLogOptions, tbl *netpol.Table, m *metrics.Metrics, nodeName func(context.Context) (string, error)) (netpol.Rules, *droplog.Log, error) {
	if dl.Group == 0 {
		return tbl, nil, nil
	}
	if dl.Group > 65535 {
		return nil, nil, fmt.Errorf("--policy-drop-log-group %d: an NFLOG group is 1 to 65535", dl.Group)
	}
	// Policy is enforced without the log: a kernel without nfnetlink_log,
	// or a group another program reads, costs the records, not the node.
	conn, err := droplog.Listen(uint16(dl.Group), 100*time.Millisecond)
	if err != nil {
		klog.Warningf("policy drop log off (flannelctl policy drops will have nothing): %v", err)
		return tbl, nil, nil
	}
	sink, err := dropSink(ctx, dl.Output)
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
	m.Handle(droplog.Path, log.Handler(dl.Rate))
	tbl.SetDropLog(netpol.DropLog{Group: uint16(dl.Group), Rate: dl.Rate})
	go log.Run(ctx, conn)
	klog.Infof("policy drop log: NFLOG group %d, at most %d records per second and direction", dl.Group, dl.Rate)
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
func spoofDropLog(dl DropLogOptions, drops *droplog.Log, tbl *antispoof.Table, ctl *antispoof.Controller) {
	if drops == nil {
		return
	}
	tbl.SetDropLog(uint16(dl.Group), dl.Rate)
	drops.RecordSpoofing(ctl)
}
