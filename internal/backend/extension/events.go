package extension

import (
	"context"
	"encoding/json"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/lease"
)

// HandleEvents runs SubnetAddCommand or SubnetRemoveCommand per event.
// Events whose command failed earlier are retried first, unless this batch
// brings a newer event for the same lease.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	newer := map[string]bool{}
	for _, ev := range events {
		newer[ev.Lease.Key()] = true
	}
	for key, p := range n.failed {
		delete(n.failed, key)
		if !newer[key] {
			n.apply(ctx, p.ev, p.retries+1)
		}
	}
	for _, ev := range events {
		n.apply(ctx, ev, 0)
	}
}

func (n *network) apply(ctx context.Context, ev lease.Event, retries int) {
	l := &ev.Lease
	if l.Attrs.BackendType != TypeName {
		klog.Warningf("extension: ignoring lease %s: it uses backend %q; every node of a network must use the same backend", l, l.Attrs.BackendType)
		return
	}
	cmd, name := n.cmds.add, "SubnetAddCommand"
	if ev.Type == lease.Removed {
		cmd, name = n.cmds.remove, "SubnetRemoveCommand"
	}
	if cmd == nil {
		return
	}
	r := cmd.run(ctx, leaseVars(l), peerData(l)+"\n")
	if r.err != nil {
		if ctx.Err() != nil {
			return
		}
		klog.Errorf("extension: %s %q for lease %s failed (attempt %d, retried with the next lease event): %s",
			name, cmd.line, l, retries+1, r.describe())
		n.failed[l.Key()] = pending{ev: ev, retries: retries}
		return
	}
	klog.V(1).Infof("extension: ran %s %q for lease %s: %q", name, cmd.line, l, r.stdout)
}

// peerData is what a peer's PreStartupCommand printed: its BackendData is
// a JSON string (upstream's encoding). Data that is not a string, from a
// hand-written lease, is passed on as it is.
func peerData(l *lease.Lease) string {
	if len(l.Attrs.BackendData) == 0 {
		return ""
	}
	var s string
	if err := json.Unmarshal(l.Attrs.BackendData, &s); err != nil {
		return string(l.Attrs.BackendData)
	}
	return s
}
