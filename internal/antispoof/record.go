// Package antispoof pins every pod on the node's pod bridge to its own
// addresses: a frame that enters the bridge from a pod's host-side veth
// must carry the pod's MAC, and its IPv4, IPv6, ARP or neighbour
// advertisement must name one of the pod's own addresses, else the kernel
// drops and counts it. NetworkPolicy rules trust the source address; this
// is what makes that trust sound.
//
// The rules sit in one nftables table of the bridge family
// (flannel-antispoof) at prerouting, which every frame from a bridge port
// crosses, whether it is then bridged to a pod of the same node or routed
// through cni0 to another node. What a pod owns comes from the CNI result
// of its ADD: the flannel CNI plugin writes it as a record next to
// subnet.env (pods/<container ID>) and adds the pod's elements to the
// table before ADD returns, so a pod's first packet is already judged by
// its own entries; flanneld keeps the table whole from those records (and,
// for pods made before this existed, from libcni's result cache) and
// removes the entries of veths that are gone. A bridge port nobody has a
// record for is dropped entirely: failing closed is the only safe answer
// to a port whose owner is unknown.
package antispoof

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flannelgo/flannel/internal/atomicfile"
	"github.com/flannelgo/flannel/internal/containerid"
	"github.com/flannelgo/flannel/internal/pace"
)

// Pod is what a pod owns on the bridge: its host-side veth, its MAC and
// its addresses, as its CNI ADD assigned them.
type Pod struct {
	ContainerID string       `json:"containerID"`
	Namespace   string       `json:"namespace,omitempty"`
	Name        string       `json:"pod,omitempty"`
	Bridge      string       `json:"bridge"`
	HostIf      string       `json:"hostInterface"`
	MAC         string       `json:"mac"`
	IPs         []netip.Addr `json:"ips"`
}

func (p Pod) String() string {
	if p.Name != "" {
		return fmt.Sprintf("pod %s/%s (%s)", p.Namespace, p.Name, p.HostIf)
	}
	return fmt.Sprintf("container %.12s (%s)", p.ContainerID, p.HostIf)
}

// valid refuses a record that could not be turned into rules; a forged or
// damaged record file must not put syntax into an nftables transaction.
func (p Pod) valid() error {
	if !validIfName(p.HostIf) || !validIfName(p.Bridge) {
		return fmt.Errorf("interface names %q and %q: not Linux interface names", p.HostIf, p.Bridge)
	}
	if _, err := net.ParseMAC(p.MAC); err != nil || len(p.MAC) != len("00:00:00:00:00:00") {
		return fmt.Errorf("MAC %q: not an Ethernet address", p.MAC)
	}
	if len(p.IPs) == 0 {
		return errors.New("no addresses")
	}
	for _, a := range p.IPs {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("address %q: not a plain IP address", a)
		}
	}
	return nil
}

// validIfName narrows the kernel's rule (dev_valid_name) to what veth and
// bridge names use, so that a name is always safe in an nft transaction,
// also as part of a counter's name.
func validIfName(s string) bool {
	if s == "" || len(s) > 15 || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.", r)
		if !ok {
			return false
		}
	}
	return true
}

// RecordDir is where the CNI plugin writes the records and flanneld reads
// them: beside subnet.env, the one directory both already share (the
// DaemonSet mounts /run/flannel; /run is empty after a reboot, as the
// pods' sandboxes are).
func RecordDir(subnetFile string) string {
	return filepath.Join(filepath.Dir(subnetFile), "pods")
}

// recordPath names the record after the container ID; IDs longer than a
// file name get a shortened, hashed name (see containerid).
func recordPath(dir, containerID string) (string, error) {
	name, err := containerid.FileName(dir, containerID)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// WriteRecord saves p atomically: a reader never sees half a record.
func WriteRecord(dir string, p Pod) error {
	if err := p.valid(); err != nil {
		return fmt.Errorf("record of %s: %w", p, err)
	}
	path, err := recordPath(dir, p.ContainerID)
	if err != nil {
		return err
	}
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode record of %s: %w", p, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pod record directory %s: %w", dir, err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write record of %s: %w", p, err)
	}
	return nil
}

// ReadRecord returns the record of one container; fs.ErrNotExist when
// there is none.
func ReadRecord(dir, containerID string) (Pod, error) {
	path, err := recordPath(dir, containerID)
	if err != nil {
		return Pod{}, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Pod{}, err
	}
	var p Pod
	if err := json.Unmarshal(data, &p); err != nil {
		return Pod{}, fmt.Errorf("pod record %s: %w", path, err)
	}
	if err := p.valid(); err != nil {
		return Pod{}, fmt.Errorf("pod record %s: %w", path, err)
	}
	return p, nil
}

// RemoveRecord forgets a container; one that has none is not an error.
func RemoveRecord(dir, containerID string) error {
	path, err := recordPath(dir, containerID)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove pod record: %w", err)
	}
	return nil
}

// ReadRecords reads every record in dir; a damaged one is reported in the
// error and skipped, so one bad file cannot unpin every other pod.
func ReadRecords(dir string) ([]Pod, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pod records in %s: %w", dir, err)
	}
	var pods []Pod
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p, err := ReadRecord(dir, e.Name())
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		pods = append(pods, p)
	}
	return pods, errors.Join(errs...)
}

// ReadPods reads the records in recordDir, and libcni's cache in
// cniCacheDir ("": none) for host interfaces that have no record: what
// flanneld knows of the pods on its bridge.
func ReadPods(recordDir, cniCacheDir string) ([]Pod, error) {
	pods, err := ReadRecords(recordDir)
	if cniCacheDir == "" {
		return pods, err
	}
	cached, cacheErr := ReadCNICache(cniCacheDir)
	seen := map[string]bool{}
	for _, p := range pods {
		seen[p.HostIf] = true
	}
	for _, p := range cached {
		if !seen[p.HostIf] {
			pods = append(pods, p)
		}
	}
	return pods, errors.Join(err, cacheErr)
}

// WatchRecords calls changed whenever a record in dir comes or goes, until
// ctx ends. A stat of one directory ten times a second costs nothing worth
// an inotify dependency.
func WatchRecords(ctx context.Context, dir string, changed func()) {
	var last time.Time
	pace.Every(ctx, 100*time.Millisecond, 0, func(context.Context) bool {
		fi, err := os.Stat(dir)
		if err != nil {
			return true
		}
		if mt := fi.ModTime(); !mt.Equal(last) {
			last = mt
			changed()
		}
		return true
	})
}
