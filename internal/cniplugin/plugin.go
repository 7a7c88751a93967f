package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// Plugin carries out the CNI commands. Its methods fit skel.CNIFuncs and
// return *types.Error values, so the runtime gets a code and a message that
// names the file or field at fault.
type Plugin struct {
	// Exec finds and runs delegate plugins; nil runs the executables found
	// on CNI_PATH.
	Exec invoke.Exec
	// Stdout receives the ADD result; nil means os.Stdout.
	Stdout io.Writer
	// Stderr receives warnings that do not fail the command (the runtime
	// logs the plugin's standard error); nil means os.Stderr.
	Stderr io.Writer
	// Pins puts a pod's own addresses into flanneld's anti-spoofing
	// table before ADD returns; nil leaves that to flanneld, which reads
	// the pod's record (see internal/antispoof).
	Pins PinTable
}

// PinTable is what ADD needs of internal/antispoof's Table.
type PinTable interface {
	Pin(ctx context.Context, p antispoof.Pod) (pinned bool, err error)
}

// Add renders the delegate config, saves it for DEL and CHECK, and runs the
// delegate's ADD.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := waitSubnetEnv(n.SubnetFile, n.subnetWait)
	if err != nil {
		return err
	}
	conf, err := DelegateConf(n, env)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("flannel network %q: %v", n.Name, err),
			fmt.Sprintf("subnet file %s", n.SubnetFile))
	}
	typ, err := DelegateType(conf)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	data, err := json.Marshal(conf)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("encode delegate config: %v", err), "")
	}
	path, err := statePath(n.DataDir, args.ContainerID)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	// Saved before the delegate runs: when ADD fails half-way, the runtime's
	// DEL still finds what to clean up.
	if err := saveState(path, data); err != nil {
		return types.NewError(types.ErrIOFailure,
			fmt.Sprintf("failed to save delegate config for container %s (dataDir %s): %v", args.ContainerID, n.DataDir, err), "")
	}
	res, err := invoke.DelegateAdd(context.Background(), typ, data, p.Exec)
	if err != nil {
		return delegateError("ADD", typ, err)
	}
	if n.CNIVersion != "" {
		if res, err = res.GetAsVersion(n.CNIVersion); err != nil {
			return types.NewError(types.ErrIncompatibleCNIVersion,
				fmt.Sprintf("convert delegate %s result to CNI version %s: %v", typ, n.CNIVersion, err), "")
		}
	}
	if err := p.pin(n, conf, typ, res, args); err != nil {
		return err
	}
	return res.PrintTo(p.stdout())
}

// Del runs the delegate's DEL with the config saved at ADD, then forgets
// it. A container flannel never added (or already deleted) is not an error:
// DEL must be idempotent.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	path, data, err := p.loadState(n, args.ContainerID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	_, typ, err := decodeState(path, data)
	if err != nil {
		p.ignoreCorruptState(args.ContainerID, path, err)
		return nil
	}
	if err := invoke.DelegateDel(context.Background(), typ, data, p.Exec); err != nil {
		return delegateError("DEL", typ, err)
	}
	// The veth is gone with the delegate's DEL; flanneld removes its
	// entries from the table when it sees the port go.
	if err := antispoof.RemoveRecord(antispoof.RecordDir(n.SubnetFile), args.ContainerID); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("delegate %s DEL succeeded but %v", typ, err), "")
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrIOFailure,
			fmt.Sprintf("delegate %s DEL succeeded but removing %s failed: %v", typ, path, err), "")
	}
	return nil
}

// Check runs the delegate's CHECK with the config saved at ADD and the
// runtime's prevResult.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	path, data, err := p.loadState(n, args.ContainerID)
	if errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrUnknownContainer,
			fmt.Sprintf("no saved delegate config %s: flannel has not added container %s", path, args.ContainerID), "")
	}
	if err != nil {
		return err
	}
	conf, typ, err := decodeState(path, data)
	if err != nil {
		return err
	}
	// prevResult is in the runtime's CNI version now, so the delegate must
	// read it in that version too.
	if n.CNIVersion != "" {
		conf["cniVersion"] = n.CNIVersion
	}
	if len(n.PrevResult) > 0 {
		conf["prevResult"] = n.PrevResult
	}
	data, err = json.Marshal(conf)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("encode delegate config: %v", err), "")
	}
	if err := invoke.DelegateCheck(context.Background(), typ, data, p.Exec); err != nil {
		return delegateError("CHECK", typ, err)
	}
	return nil
}

// Status reports whether the plugin can serve ADDs: subnet.env must be
// there and usable, and the delegate must be installed and ready.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := loadSubnetEnv(n.SubnetFile, types.ErrPluginNotAvailable)
	if err != nil {
		return err
	}
	conf, err := DelegateConf(n, env)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("flannel network %q: %v", n.Name, err),
			fmt.Sprintf("subnet file %s", n.SubnetFile))
	}
	typ, err := DelegateType(conf)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	ctx := context.Background()
	exec := p.exec()
	pluginPath, err := exec.FindInPath(typ, filepath.SplitList(args.Path))
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("delegate plugin %q not found in CNI_PATH %q: %v", typ, args.Path, err), "")
	}
	info, err := invoke.GetVersionInfo(ctx, pluginPath, exec)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("delegate plugin %s does not answer VERSION: %v", pluginPath, err), "")
	}
	if !supportsStatus(info) {
		return nil
	}
	data, err := json.Marshal(conf)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("encode delegate config: %v", err), "")
	}
	if err := invoke.DelegateStatus(ctx, typ, data, exec); err != nil {
		return delegateError("STATUS", typ, err)
	}
	return nil
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout != nil {
		return p.Stdout
	}
	return os.Stdout
}

func (p *Plugin) exec() invoke.Exec {
	if p.Exec != nil {
		return p.Exec
	}
	return &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
}

// loadState returns fs.ErrNotExist (unwrapped, as the only error) when the
// container has no saved config.
func (p *Plugin) loadState(n *NetConf, containerID string) (string, []byte, error) {
	path, err := statePath(n.DataDir, containerID)
	if err != nil {
		return "", nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return path, nil, fs.ErrNotExist
	}
	if err != nil {
		return path, nil, types.NewError(types.ErrIOFailure,
			fmt.Sprintf("failed to read saved delegate config: %v", err), "")
	}
	return path, data, nil
}

// ignoreCorruptState is DEL's answer to a saved config it cannot read, as
// upstream's: failing would have the runtime retry the pod's teardown
// forever, and no retry can repair the file. The file is kept as evidence.
func (p *Plugin) ignoreCorruptState(containerID, path string, err error) {
	w := p.Stderr
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "flannel: DEL of container %s succeeds without running the delegate's DEL: %v. "+
		"The pod's interface and its address in the delegate's IPAM may be left behind: release them by hand, then remove %s\n",
		containerID, err, path)
}

func decodeState(path string, data []byte) (map[string]any, string, error) {
	conf := map[string]any{}
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, "", types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("failed to parse saved delegate config %s: %v", path, err), "")
	}
	typ, err := DelegateType(conf)
	if err != nil {
		return nil, "", types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("saved delegate config %s: %v", path, err), "")
	}
	return conf, typ, nil
}

// loadSubnetEnv reads subnet.env; code is the CNI error code for a file
// that is not there (yet): "try again later" for ADD, "plugin not
// available" for STATUS.
func loadSubnetEnv(path string, missingCode uint) (*subnetenv.Env, error) {
	env, err := subnetenv.Read(path)
	if err == nil {
		return env, nil
	}
	msg := fmt.Sprintf("failed to load flannel 'subnet.env' file: %v. Check the flannel pod log for this node.", err)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, types.NewError(missingCode, msg,
			fmt.Sprintf("flanneld has not written %s yet; it does so once it has leased a subnet for this node", path))
	case errors.Is(err, fs.ErrPermission):
		return nil, types.NewError(types.ErrIOFailure, msg,
			fmt.Sprintf("%s is written by flanneld and must be readable by the CNI plugin", path))
	default:
		return nil, types.NewError(types.ErrDecodingFailure, msg,
			fmt.Sprintf("%s is malformed; flanneld rewrites it when it starts", path))
	}
}

// waitSubnetEnv gives flanneld up to wait to write subnet.env (a node that
// is booting runs kubelet and flanneld at the same time), then fails with
// "try again later", naming the file and saying flanneld is not ready.
func waitSubnetEnv(path string, wait time.Duration) (*subnetenv.Env, error) {
	deadline := time.Now().Add(wait)
	for {
		env, err := loadSubnetEnv(path, types.ErrTryAgainLater)
		var te *types.Error
		if err == nil || !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
			return env, err
		}
		if !time.Now().Before(deadline) {
			if wait > 0 {
				te.Msg = fmt.Sprintf("flanneld is not ready: %s did not appear within %s; %s", path, wait, te.Msg)
			}
			return nil, te
		}
		time.Sleep(min(200*time.Millisecond, time.Until(deadline)))
	}
}

// delegateError keeps the delegate's own code and says which plugin and
// command failed.
func delegateError(verb, typ string, err error) error {
	var e *types.Error
	if errors.As(err, &e) {
		return types.NewError(e.Code, fmt.Sprintf("delegate %s %s failed: %s", typ, verb, e.Msg), e.Details)
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("delegate %s %s failed: %v", typ, verb, err), "")
}

func supportsStatus(info version.PluginInfo) bool {
	for _, v := range info.SupportedVersions() {
		if ok, err := version.GreaterThanOrEqualTo(v, "1.1.0"); err == nil && ok {
			return true
		}
	}
	return false
}
