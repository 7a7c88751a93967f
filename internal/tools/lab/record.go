package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/atomicfile"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// DefaultStateRoot holds one state directory per lab.
const DefaultStateRoot = "/run/flannelctl/lab"

// procGrace is how long a flanneld of a lab whose lab process is gone gets
// between SIGTERM and SIGKILL.
const procGrace = 10 * time.Second

// record is the lab's record of its testbed in the state dir, for the
// commands that run in other processes than the lab process (status,
// check, exec, down, also after the lab process crashed): topology.json
// (hosts, nodes, pods) and pids/<pid>.json, one per process the testbed
// runs. The lab process hands it to the testbed as its Recorder.
type record struct{ dir string }

var _ testbed.Recorder = record{}

func topologyPath(dir string) string { return filepath.Join(dir, "topology.json") }
func pidDir(dir string) string       { return filepath.Join(dir, "pids") }

func (r record) pidFile(pid int) string {
	return filepath.Join(pidDir(r.dir), strconv.Itoa(pid)+".json")
}

// Topology implements testbed.Recorder.
func (r record) Topology(data []byte) error {
	return atomicfile.WriteFile(topologyPath(r.dir), data, 0o644)
}

// Started implements testbed.ProcRecorder: the pid file exists while the
// process runs.
func (r record) Started(p *testbed.Proc) error {
	if err := os.MkdirAll(pidDir(r.dir), 0o755); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := writeJSON(r.pidFile(p.Pid), p); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// Exited implements testbed.ProcRecorder.
func (r record) Exited(p *testbed.Proc) {
	if err := os.Remove(r.pidFile(p.Pid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		klog.Warningf("remove pid file: %v", err)
	}
}

// procs returns the recorded processes that still run; stale pid files
// are removed.
func (r record) procs() ([]*recordedProc, error) {
	files, err := filepath.Glob(filepath.Join(pidDir(r.dir), "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*recordedProc
	for _, f := range files {
		p, err := readRecordedProc(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // exited meanwhile
		}
		if err != nil {
			klog.Warningf("ignoring %v", err)
			continue
		}
		if !p.alive() {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				klog.Warningf("remove stale pid file: %v", err)
			}
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// recorded is a lab's testbed as the lab's other commands see it: the
// topology, and the processes that still run.
type recorded struct {
	*testbed.Testbed
	procs []*recordedProc
}

// loadTestbed reads the record of lab name in dir.
func loadTestbed(name, dir string) (*recorded, error) {
	data, err := os.ReadFile(topologyPath(dir))
	if err != nil {
		return nil, fmt.Errorf("lab %s: %w (is it up?)", name, err)
	}
	tb, err := testbed.FromTopology(data)
	if err != nil {
		return nil, fmt.Errorf("lab %s: %s: %w", name, topologyPath(dir), err)
	}
	if tb.Name != name {
		return nil, fmt.Errorf("lab %s: %s describes testbed %q", name, topologyPath(dir), tb.Name)
	}
	tb.Opts.StateDir = dir
	procs, err := record{dir}.procs()
	if err != nil {
		return nil, fmt.Errorf("lab %s: %w", name, err)
	}
	return &recorded{Testbed: tb, procs: procs}, nil
}

// flanneld returns the node's running flanneld, or nil.
func (r *recorded) flanneld(n *testbed.Node) *recordedProc {
	for _, p := range r.procs {
		if p.Role == n.FlanneldRole() && p.alive() {
			return p
		}
	}
	return nil
}

// cleanup removes lab name's testbed without the lab process: it stops
// the processes recorded in dir (only those whose pid still names the
// process started) and removes the testbed's namespaces and state; the
// record goes with the lab's other files (removeOwn). It is idempotent.
func cleanup(name, dir string) error {
	r := record{dir}
	procs, err := r.procs()
	errs := []error{err}
	var wg sync.WaitGroup
	perr := make([]error, len(procs))
	for i, p := range procs {
		klog.V(2).Infof("lab %s: stopping pid %d (%s)", name, p.Pid, p.Role)
		wg.Go(func() { _, perr[i] = p.stop(procGrace) })
	}
	wg.Wait()
	// A Kubernetes lab's pods and shims were never the lab process's
	// children: its cgroup finds them.
	errs = append(errs, errors.Join(perr...), killCgroup(labCgroup(name)), testbed.Remove(name, dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up lab %s: %w", name, err)
	}
	return nil
}
