package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/flannelgo/flannel/internal/atomicfile"
)

// Defaults for CNIPods.
const (
	DefaultCNIBinDir  = "/opt/cni/bin"
	DefaultCNIVersion = "1.0.0"
	// CNINetworkName is the network name of kube-flannel's conflist.
	CNINetworkName = "cbr0"
	podIfName      = "eth0"
)

// CNIPods attaches pods through the real flannel CNI plugin, with the
// conflist kube-flannel installs (flannel delegating to bridge with
// hairpinMode and isDefaultGateway, then portmap), run by libcni as a
// container runtime would. Every plugin runs inside the node's namespace,
// where bridge creates cni0 and the host end of the pod's veth.
//
// Each node keeps its CNI files under <node dir>/cni: the conflist
// (net.d/10-flannel.conflist), libcni's cache, the flannel plugin's data
// dir and host-local's allocations. Nothing is written to /var/lib/cni, so
// nodes and testbeds stay apart, and deleting the state dir removes it all.
type CNIPods struct {
	// PluginDir holds the flannel plugin, named "flannel".
	PluginDir string
	// BinDir holds bridge, host-local and portmap; default /opt/cni/bin
	// (scripts/install-cni-tools.sh installs them there).
	BinDir string
	// PodMTU, when not 0, is written as the delegate's "mtu", overriding
	// FLANNEL_MTU from subnet.env (how an operator reproduces an MTU
	// mismatch).
	PodMTU int
	// CNIVersion of the conflist; default 1.0.0.
	CNIVersion string
}

// CNIDir is the node's CNI directory used by CNIPods.
func CNIDir(n *Node) string { return filepath.Join(n.Dir, "cni") }

// HostLocalDir is where host-local keeps the node's allocations (one file
// per allocated address).
func HostLocalDir(n *Node) string { return filepath.Join(CNIDir(n), "ipam", CNINetworkName) }

// ConflistPath is the node's conflist as CNIPods writes it.
func ConflistPath(n *Node) string {
	return filepath.Join(CNIDir(n), "net.d", "10-flannel.conflist")
}

// CheckBinaries reports which CNI plugin binaries are missing, with what
// to do about it.
func (c *CNIPods) CheckBinaries() error {
	var missing []string
	check := func(dir, name string) {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, filepath.Join(dir, name))
		}
	}
	check(c.PluginDir, "flannel")
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		check(c.binDir(), p)
	}
	if len(missing) > 0 {
		return fmt.Errorf("CNI plugins missing: %s (build the flannel plugin with `go build -o DIR/flannel ./cmd/flannel`; install the reference plugins with scripts/install-cni-tools.sh %s)",
			strings.Join(missing, ", "), c.binDir())
	}
	return nil
}

func (c *CNIPods) binDir() string {
	if c.BinDir == "" {
		return DefaultCNIBinDir
	}
	return c.BinDir
}

func (c *CNIPods) cniVersion() string {
	if c.CNIVersion == "" {
		return DefaultCNIVersion
	}
	return c.CNIVersion
}

// Conflist renders the node's network configuration list.
func (c *CNIPods) Conflist(n *Node) ([]byte, error) {
	delegate := map[string]any{"hairpinMode": true, "isDefaultGateway": true}
	if c.PodMTU > 0 {
		delegate["mtu"] = c.PodMTU
	}
	dir := CNIDir(n)
	conf := map[string]any{
		"name":       CNINetworkName,
		"cniVersion": c.cniVersion(),
		"plugins": []any{
			map[string]any{
				"type":       "flannel",
				"delegate":   delegate,
				"subnetFile": n.SubnetFile,
				"dataDir":    filepath.Join(dir, "flannel"),
				// Keeps host-local's store per node instead of the
				// machine-wide /var/lib/cni/networks.
				"ipam": map[string]any{"dataDir": filepath.Join(dir, "ipam")},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// load writes the node's conflist (so an operator can read what ran) and
// returns it with a libcni runner bound to the node's namespace.
func (c *CNIPods) load(n *Node) (*libcni.NetworkConfigList, *libcni.CNIConfig, error) {
	data, err := c.Conflist(n)
	if err != nil {
		return nil, nil, fmt.Errorf("render conflist for %s: %w", n.Name, err)
	}
	path := ConflistPath(n)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, fmt.Errorf("conflist for %s: %w", n.Name, err)
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return nil, nil, fmt.Errorf("conflist for %s: %w", n.Name, err)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parse conflist %s: %w", path, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{c.PluginDir, c.binDir()},
		filepath.Join(CNIDir(n), "cache"), &nsExec{ns: n.NS})
	return list, cni, nil
}

func runtimeConf(p *Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		// The pod namespace's name is unique within the machine.
		ContainerID: p.NS,
		NetNS:       NSPath(p.NS),
		IfName:      podIfName,
		// As kubelet's runtimes name the pod to the plugins.
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "testbed"}, {"K8S_POD_NAME", p.Name}},
	}
}

// Attach implements PodNetworker: CNI ADD.
func (c *CNIPods) Attach(ctx context.Context, p *Pod) error {
	list, cni, err := c.load(p.Node)
	if err != nil {
		return err
	}
	res, err := cni.AddNetworkList(ctx, list, runtimeConf(p))
	if err != nil {
		return fmt.Errorf("CNI ADD %s on node %s (conflist %s): %w", p.Name, p.Node.Name, ConflistPath(p.Node), err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("CNI ADD %s: convert result: %w", p.Name, err)
	}
	for _, ipc := range r.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		if a = a.Unmap(); a.Is4() {
			p.IP = a
		} else {
			p.IP6 = a
		}
	}
	if !p.IP.IsValid() && !p.IP6.IsValid() {
		return fmt.Errorf("CNI ADD %s: the result has no address: %+v", p.Name, r)
	}
	return nil
}

// Detach implements PodNetworker: CNI DEL, which releases the host-local
// address and removes the veth.
func (c *CNIPods) Detach(ctx context.Context, p *Pod) error {
	list, cni, err := c.load(p.Node)
	if err != nil {
		return err
	}
	if err := cni.DelNetworkList(ctx, list, runtimeConf(p)); err != nil {
		return fmt.Errorf("CNI DEL %s on node %s: %w", p.Name, p.Node.Name, err)
	}
	return nil
}

// nsExec runs CNI plugins inside a node namespace through `ip netns exec`,
// which also gives them that namespace's /sys.
type nsExec struct {
	ns string
	version.PluginDecoder
}

var _ invoke.Exec = (*nsExec)(nil)

// ExecPlugin implements invoke.Exec.
func (e *nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// FindInPath implements invoke.Exec.
func (e *nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// pluginError turns a failed plugin run into the CNI error it printed, or
// into its stderr when it printed none.
func pluginError(err error, stdout, stderr []byte) error {
	var ce types.Error
	if len(stdout) > 0 && json.Unmarshal(stdout, &ce) == nil && ce.Msg != "" {
		return &ce
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		msg = strings.TrimSpace(string(stdout))
	}
	if msg == "" {
		return fmt.Errorf("plugin failed without a message: %w", err)
	}
	return errors.New(msg + ": " + err.Error())
}
