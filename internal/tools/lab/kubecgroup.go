package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// The Kubernetes lab keeps every process of a node (the mount-namespace
// holder, containerd, its shims, the containers, kubelet, kube-proxy) in
// cgroup /flannel-lab-<name>/<node> of every hierarchy. Kubelet's pods go
// below it (cgroupRoot <node cgroup>/pods): a kubelet with a cgroup root of
// its own never takes another node's pod cgroups for orphans and removes
// them. The cgroup is also the lab's inventory: `lab down` kills what is
// in it, even after the lab process crashed and the shims (which never were
// its children) were left behind.

// cgroupHierarchy is one mounted cgroup hierarchy of this machine.
type cgroupHierarchy struct {
	Dir    string // mount point, e.g. /sys/fs/cgroup/memory
	FSType string // cgroup (v1) or cgroup2
	Opts   string // v1: the controllers and name= of the mount, e.g. "cpu" or "name=systemd"
}

// cgroupHierarchies lists the cgroup hierarchies mounted under
// /sys/fs/cgroup, as the node's mount namespace must mount them again
// (a fresh sysfs hides the host's).
func cgroupHierarchies() ([]cgroupHierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupHierarchy
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		h, ok := parseCgroupMount(sc.Text())
		if ok {
			out = append(out, h)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted under /sys/fs/cgroup: kubelet needs one")
	}
	return out, nil
}

// parseCgroupMount reads one mountinfo line: "id parent maj:min root
// mountpoint opts [optional...] - fstype source superopts".
func parseCgroupMount(line string) (cgroupHierarchy, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return cgroupHierarchy{}, false
	}
	f, g := strings.Fields(pre), strings.Fields(post)
	if len(f) < 5 || len(g) < 3 || (g[0] != "cgroup" && g[0] != "cgroup2") {
		return cgroupHierarchy{}, false
	}
	if f[4] != "/sys/fs/cgroup" && !strings.HasPrefix(f[4], "/sys/fs/cgroup/") {
		return cgroupHierarchy{}, false
	}
	var opts []string
	for _, o := range strings.Split(g[2], ",") {
		if o != "rw" && o != "ro" {
			opts = append(opts, o)
		}
	}
	return cgroupHierarchy{Dir: f[4], FSType: g[0], Opts: strings.Join(opts, ",")}, true
}

// labCgroup is the relative cgroup path of lab name, and of its node.
func labCgroup(name string) string        { return "flannel-lab-" + name }
func nodeCgroup(name, node string) string { return labCgroup(name) + "/" + node }

// makeCgroup creates rel in every hierarchy. A new cpuset cgroup starts
// without CPUs or memory nodes, and no process can join it: it gets its
// parent's.
func makeCgroup(hs []cgroupHierarchy, rel string) error {
	for _, h := range hs {
		dir := h.Dir
		for _, part := range strings.Split(rel, "/") {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := inheritCpuset(parent, dir, f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func inheritCpuset(parent, dir, file string) error {
	cur, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil || strings.TrimSpace(string(cur)) != "" {
		return nil // not a cpuset hierarchy, or already set
	}
	val, err := os.ReadFile(filepath.Join(parent, file))
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(parent, file), err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), val, 0o644); err != nil {
		return fmt.Errorf("set %s: %w", filepath.Join(dir, file), err)
	}
	return nil
}

// joinScript is a shell prefix that moves the shell into rel of every
// hierarchy; what it execs next inherits the cgroups.
func joinScript(hs []cgroupHierarchy, rel string) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "echo $$ > %s && ", shellQuote(filepath.Join(h.Dir, rel, "cgroup.procs")))
	}
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// cgroupPids lists the processes in rel or below it, in any hierarchy.
func cgroupPids(hs []cgroupHierarchy, rel string) []int {
	seen := map[int]bool{}
	for _, h := range hs {
		root := filepath.Join(h.Dir, rel)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var out []int
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// killCgroup SIGKILLs every process in rel until none is left (a dying
// shim may still fork), then removes the cgroups, deepest first. It is
// idempotent: a lab without cgroups has nothing to do.
func killCgroup(rel string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := cgroupPids(hs, rel)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in cgroup %s after 20 s of SIGKILL", pids, rel)
		}
		klog.V(2).Infof("cgroup %s: killing %v", rel, pids)
		for _, p := range pids {
			if err := unix.Kill(p, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill pid %d in cgroup %s: %w", p, rel, err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return removeCgroup(hs, rel)
}

// removeCgroup removes rel and everything below it in every hierarchy.
// An emptied cgroup can be busy for a moment while its last task exits.
func removeCgroup(hs []cgroupHierarchy, rel string) error {
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h.Dir, rel)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		// Deepest first: children sort after their parent.
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			errs = append(errs, rmdirRetry(d))
		}
	}
	return errors.Join(errs...)
}

func rmdirRetry(dir string) error {
	var err error
	for range 50 {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// cgroupLeft reports the lab's cgroups that still exist, for `lab down`'s
// list of leftovers.
func cgroupLeft(name string) bool {
	hs, err := cgroupHierarchies()
	if err != nil {
		return false
	}
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h.Dir, labCgroup(name))); err == nil {
			return true
		}
	}
	return false
}

// cgroupMemory is the memory (bytes, page cache included) charged to rel,
// from the v1 memory controller; 0 when there is none.
func cgroupMemory(hs []cgroupHierarchy, rel string) uint64 {
	for _, h := range hs {
		data, err := os.ReadFile(filepath.Join(h.Dir, rel, "memory.usage_in_bytes"))
		if err != nil {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
		return n
	}
	return 0
}
