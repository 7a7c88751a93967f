// Package lab runs `flannelctl lab`: a real multi-node flannel cluster in
// network namespaces on one machine. `lab up` starts a lab process (this
// same program, `flannelctl lab serve`) in a session of its own; it builds
// the testbed (underlay, optional router, nodes), runs an embedded etcd in
// the hub namespace, supervises one real flanneld per node and creates
// pods through the real flannel CNI plugin. Every other command (status,
// check, exec, down) works from the lab's state directory, so it works from
// any shell, and `down` also after the lab process crashed.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/flannelgo/flannel/internal/atomicfile"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// Defaults of `lab up`.
const (
	DefaultName        = "lab"
	DefaultNodes       = 3
	DefaultBackend     = "vxlan"
	DefaultPodsPerNode = 1
	maxNodes           = 100
	maxPodsPerNode     = 50
)

// Spec is what `lab up` was asked for, and where the lab finds its
// binaries. It is written to <state>/lab.json before the lab process
// starts and read by every later command.
type Spec struct {
	Name        string
	Nodes       int
	Backend     string
	PodsPerNode int
	Segments    int
	UnderlayMTU int
	// PodMTU 0 means "auto": pods get FLANNEL_MTU.
	PodMTU   int
	StateDir string
	// Datapath is net-conf.json's Backend "Datapath": "" (the kernel
	// path) or "ebpf" (`lab up --datapath ebpf`, host-gw and vxlan).
	Datapath string `json:",omitempty"`

	FlanneldPath string // the flanneld binary
	PluginDir    string // holds the flannel CNI plugin, named "flannel"
	CNIBinDir    string // holds bridge, host-local, portmap
	// Timeout bounds the whole of `lab up`.
	Timeout time.Duration
	// Kube, when set, makes the nodes Kubernetes nodes (`lab up
	// --kubernetes`): flannel comes from the manifest, not the lab.
	Kube *KubeSpec `json:",omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,6}$`)

// Validate fills in defaults and refuses what the lab cannot build.
func (s *Spec) Validate() error {
	if s.Name == "" {
		s.Name = DefaultName
	}
	if !nameRE.MatchString(s.Name) {
		return fmt.Errorf("--name %q: use 1 to 6 characters a-z, 0-9 (namespaces are called fl-<name>-...)", s.Name)
	}
	if s.Nodes < 1 || s.Nodes > maxNodes {
		return fmt.Errorf("--nodes %d: must be between 1 and %d", s.Nodes, maxNodes)
	}
	if s.PodsPerNode < 0 || s.PodsPerNode > maxPodsPerNode {
		return fmt.Errorf("--pods-per-node %d: must be between 0 and %d", s.PodsPerNode, maxPodsPerNode)
	}
	if s.Segments == 0 {
		s.Segments = 1
	}
	if s.Segments != 1 && s.Segments != 2 {
		return fmt.Errorf("--segments %d: must be 1 (one L2 underlay) or 2 (two segments and a router)", s.Segments)
	}
	if s.UnderlayMTU == 0 {
		s.UnderlayMTU = testbed.DefaultUnderlayMTU
	}
	if s.UnderlayMTU < 1280 || s.UnderlayMTU > 9000 {
		return fmt.Errorf("--underlay-mtu %d: must be between 1280 and 9000", s.UnderlayMTU)
	}
	if s.PodMTU != 0 && (s.PodMTU < 576 || s.PodMTU > 9000) {
		return fmt.Errorf("--pod-mtu %d: must be auto or between 576 and 9000", s.PodMTU)
	}
	s.Backend = strings.ToLower(s.Backend)
	if s.Backend == "" {
		s.Backend = DefaultBackend
	}
	if s.Timeout == 0 {
		s.Timeout = 5 * time.Minute
	}
	if err := s.checkDatapath(); err != nil {
		return err
	}
	if s.Kube != nil {
		s.Kube.EBPF = s.wantsEBPF()
	}
	return nil
}

// ParsePodMTU reads --pod-mtu: "auto" (0) or a number.
func ParsePodMTU(v string) (int, error) {
	if v == "" || v == "auto" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("--pod-mtu %q: use auto or a number of bytes", v)
	}
	return n, nil
}

// NetConf is the network configuration the lab writes to etcd.
func (s *Spec) NetConf() string {
	if s.wantsEBPF() {
		return fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q,"Datapath":"ebpf"}}`, s.Backend)
	}
	return fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q}}`, s.Backend)
}

// StateDir is where lab name keeps its state under root ("" = the
// default /run/flannelctl/lab).
func StateDir(root, name string) string {
	if root == "" {
		root = DefaultStateRoot
	}
	return filepath.Join(root, name)
}

// Files of the lab in its state dir, next to the testbed's own.
func specPath(dir string) string    { return filepath.Join(dir, "lab.json") }
func procPath(dir string) string    { return filepath.Join(dir, "labproc.json") }
func LogPath(dir string) string     { return filepath.Join(dir, "lab.log") }
func binDir(dir string) string      { return filepath.Join(dir, "bin") }
func etcdLogPath(dir string) string { return filepath.Join(dir, "etcd", "etcd.log") }

// ownEntries are what the lab adds to the testbed's state dir.
func ownEntries(dir string) []string {
	return []string{specPath(dir), procPath(dir), LogPath(dir), binDir(dir),
		topologyPath(dir), pidDir(dir), kubeDir(dir)}
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

// ReadSpec reads the spec of the lab in dir.
func ReadSpec(dir string) (*Spec, error) {
	data, err := os.ReadFile(specPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no lab in %s: start one with `flannelctl lab up --name %s`", dir, filepath.Base(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("read lab spec: %w", err)
	}
	s := &Spec{}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("read lab spec %s: %w", specPath(dir), err)
	}
	return s, nil
}

// Resolve picks the lab a command means: name if given, otherwise the
// only lab under root, or "lab" when there is none (or it is among
// several); several others without --name are an error that lists them.
func Resolve(root, name string) (string, error) {
	if name != "" {
		return name, nil
	}
	if root == "" {
		root = DefaultStateRoot
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return DefaultName, nil
	}
	var labs []string
	for _, e := range ents {
		if _, err := os.Stat(specPath(filepath.Join(root, e.Name()))); err == nil {
			if e.Name() == DefaultName {
				return DefaultName, nil
			}
			labs = append(labs, e.Name())
		}
	}
	switch len(labs) {
	case 0:
		return DefaultName, nil
	case 1:
		return labs[0], nil
	}
	return "", fmt.Errorf("there are several labs (%s); say which one with --name", strings.Join(labs, ", "))
}

// NeedRoot explains why the lab cannot run as another user.
func NeedRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("flannelctl lab needs root: it creates network namespaces, veth pairs and processes inside them; run it with sudo")
	}
	return nil
}
