package antispoof

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// FromResult reads what a pod owns from the result of its CNI ADD by the
// bridge plugin: the interface in the sandbox (its MAC and addresses) and
// the host-side veth, the interface outside the sandbox that is not the
// bridge. cniArgs is CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME name the
// pod in metrics and logs).
func FromResult(res types.Result, containerID, bridge, cniArgs string) (Pod, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return Pod{}, fmt.Errorf("convert CNI result: %w", err)
	}
	p := Pod{ContainerID: containerID, Bridge: bridge}
	p.Namespace, p.Name = podName(cniArgs)
	sandbox := -1
	for i, ifc := range r.Interfaces {
		switch {
		case ifc.Sandbox != "":
			if sandbox < 0 {
				sandbox, p.MAC = i, strings.ToLower(ifc.Mac)
			}
		case bridge == "" && p.Bridge == "":
			// The bridge plugin lists the bridge first.
			p.Bridge = ifc.Name
		case ifc.Name != p.Bridge:
			if p.HostIf != "" {
				return Pod{}, fmt.Errorf("CNI result has two host-side interfaces, %s and %s: %w", p.HostIf, ifc.Name, errNotBridgeResult)
			}
			p.HostIf = ifc.Name
		}
	}
	if sandbox < 0 || p.HostIf == "" {
		return Pod{}, fmt.Errorf("CNI result has no sandbox interface with a host-side peer: %w", errNotBridgeResult)
	}
	for _, ipc := range r.IPs {
		if ipc.Interface != nil && *ipc.Interface != sandbox {
			continue
		}
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			p.IPs = append(p.IPs, a.Unmap())
		}
	}
	return p, p.valid()
}

// podName reads the pod's namespace and name from CNI_ARGS, as kubelet's
// runtimes pass them.
func podName(cniArgs string) (namespace, name string) {
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			namespace = v
		case "K8S_POD_NAME":
			name = v
		}
	}
	return namespace, name
}

// cacheEntry is the part of libcni's result cache (written by every
// libcni-based runtime: containerd, CRI-O, cnitool) that names a pod.
type cacheEntry struct {
	ContainerID string          `json:"containerId"`
	NetworkName string          `json:"networkName"`
	CNIArgs     [][2]string     `json:"cniArgs"`
	Result      json.RawMessage `json:"result"`
}

// errNotBridgeResult: the result names no pod behind a bridge port.
var errNotBridgeResult = errors.New("not a bridge plugin's result")

// ReadCNICache reads the pods that libcni's cache in dir/results knows:
// pods added before the flannel CNI plugin wrote records of its own (an
// upgrade, or a migration from upstream flannel) keep their addresses
// instead of being cut off. Entries that are not a bridge plugin's result
// are skipped.
func ReadCNICache(dir string) ([]Pod, error) {
	files, err := filepath.Glob(filepath.Join(dir, "results", "*"))
	if err != nil {
		return nil, err
	}
	var pods []Pod
	var errs []error
	for _, f := range files {
		p, err := readCacheEntry(f)
		if errors.Is(err, errNotBridgeResult) {
			continue // e.g. containerd's loopback network: no bridge port to pin
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pods = append(pods, p)
	}
	return pods, errors.Join(errs...)
}

func readCacheEntry(path string) (Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Pod{}, err
	}
	var e cacheEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return Pod{}, fmt.Errorf("libcni cache entry %s: %w", path, err)
	}
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(e.Result, &head); err != nil {
		return Pod{}, fmt.Errorf("libcni cache entry %s: result: %w", path, err)
	}
	res, err := version.NewResult(head.CNIVersion, e.Result)
	if err != nil {
		return Pod{}, fmt.Errorf("libcni cache entry %s: result: %w", path, err)
	}
	var args []string
	for _, kv := range e.CNIArgs {
		args = append(args, kv[0]+"="+kv[1])
	}
	p, err := FromResult(res, e.ContainerID, "", strings.Join(args, ";"))
	if err != nil {
		return Pod{}, fmt.Errorf("libcni cache entry %s: %w", path, err)
	}
	return p, nil
}
