// Package extension is the extension backend: the operator's own commands
// set up the data path. They run when the node starts and whenever another
// node's lease appears or goes away, with upstream flanneld's variables,
// but without a shell (see splitWords), so no lease value can inject shell
// syntax.
package extension

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// TypeName is the Backend "Type" this package serves.
const TypeName = "extension"

// Options are upstream's extension keys of net-conf.json's Backend object.
type Options struct {
	PreStartupCommand   string
	PostStartupCommand  string
	SubnetAddCommand    string
	SubnetRemoveCommand string
}

// commands are Options split into words.
type commands struct {
	pre, post, add, remove *command
}

func parseCommands(raw json.RawMessage) (commands, error) {
	var o Options
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return commands{}, fmt.Errorf("extension backend config: %w", err)
		}
	}
	var c commands
	var err error
	for _, f := range []struct {
		dst       **command
		key, line string
	}{
		{&c.pre, "PreStartupCommand", o.PreStartupCommand},
		{&c.post, "PostStartupCommand", o.PostStartupCommand},
		{&c.add, "SubnetAddCommand", o.SubnetAddCommand},
		{&c.remove, "SubnetRemoveCommand", o.SubnetRemoveCommand},
	} {
		if *f.dst, err = parseCommand(f.key, f.line); err != nil {
			return commands{}, err
		}
	}
	return c, nil
}

// Backend is an extension backend bound to one external interface.
type Backend struct {
	ext  *backend.ExternalInterface
	cmds commands
}

// New is the backend.Factory for "extension".
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, fmt.Errorf("extension: no external interface")
	}
	cmds, err := parseCommands(raw)
	if err != nil {
		return nil, err
	}
	return &Backend{ext: ext, cmds: cmds}, nil
}

// RegisterNetwork runs PreStartupCommand; its standard output, as a JSON
// string, is the BackendData other nodes' SubnetAddCommand reads on stdin
// (upstream's encoding). A failure stops start-up, as upstream does: the
// node would otherwise publish a lease its peers cannot use.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	n := &network{ext: b.ext, cfg: cfg, cmds: b.cmds, failed: map[string]pending{}}
	if b.cmds.pre == nil {
		klog.Info("extension: no PreStartupCommand configured")
		return n, nil
	}
	r := b.cmds.pre.run(ctx, nil, "")
	if r.err != nil {
		return nil, fmt.Errorf("extension: PreStartupCommand %q failed: %s", b.cmds.pre.line, r.describe())
	}
	klog.Infof("extension: ran PreStartupCommand %q: %q", b.cmds.pre.line, r.stdout)
	data, err := json.Marshal(r.stdout)
	if err != nil {
		return nil, fmt.Errorf("extension: encode PreStartupCommand output: %w", err)
	}
	n.data = data
	return n, nil
}

type network struct {
	ext  *backend.ExternalInterface
	cfg  *config.Config
	cmds commands
	data json.RawMessage

	mu sync.Mutex
	// failed holds, by lease key, the latest event whose command failed; it
	// is retried with the next batch unless a newer event replaced it.
	failed map[string]pending
}

type pending struct {
	ev      lease.Event
	retries int
}

func (n *network) LeaseAttrs() lease.Attrs {
	return lease.Attrs{BackendType: TypeName, BackendData: n.data}
}

// MTU is the external interface's: what the commands build is unknown.
func (n *network) MTU() int { return n.ext.Iface.MTU }

// Activate runs PostStartupCommand with NETWORK, SUBNET and PUBLIC_IP (and
// their IPv6 twins).
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	if n.cmds.post == nil {
		klog.Info("extension: no PostStartupCommand configured")
		return nil
	}
	vars := leaseVars(own)
	if n.cfg.EnableIPv4 {
		vars["NETWORK"] = n.cfg.Network.String()
	}
	if n.cfg.EnableIPv6 {
		vars["IPV6_NETWORK"] = n.cfg.IPv6Network.String()
	}
	r := n.cmds.post.run(ctx, vars, "")
	if r.err != nil {
		return fmt.Errorf("extension: PostStartupCommand %q failed: %s", n.cmds.post.line, r.describe())
	}
	klog.Infof("extension: ran PostStartupCommand %q: %q", n.cmds.post.line, r.stdout)
	return nil
}

// leaseVars are the variables upstream sets for a lease (SUBNET, PUBLIC_IP,
// and for PostStartupCommand IPV6SUBNET and PUBLIC_IPV6), set here for every
// command. IPV6_SUBNET is this project's earlier name for IPV6SUBNET, kept so
// that commands written for it still work; upstream sets no such variable.
func leaseVars(l *lease.Lease) map[string]string {
	vars := map[string]string{}
	set := func(k string, ok bool, v string) {
		if ok {
			vars[k] = v
		}
	}
	set("SUBNET", l.Subnet.IsValid(), l.Subnet.String())
	set("PUBLIC_IP", l.Attrs.PublicIP.IsValid(), l.Attrs.PublicIP.String())
	set("IPV6SUBNET", l.IPv6Subnet.IsValid(), l.IPv6Subnet.String())
	set("IPV6_SUBNET", l.IPv6Subnet.IsValid(), l.IPv6Subnet.String())
	set("PUBLIC_IPV6", l.Attrs.PublicIPv6.IsValid(), l.Attrs.PublicIPv6.String())
	return vars
}
