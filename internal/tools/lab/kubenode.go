package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// kubeNode is a lab node that is a Kubernetes node: its network namespace
// (the testbed's) plus a mount namespace of its own, held by a sleeping
// process, in which the node's state directories are its own.
type kubeNode struct {
	*testbed.Node
	dir    string // <state>/kube/<node>: the node's files on the host
	cgroup string // relative cgroup path of everything the node runs
	holder *testbed.Proc
	procs  []*testbed.Proc // containerd, kubelet, kube-proxy
}

// nodeOwnDirs are bind-mounted from the node's directory inside its mount
// namespace, so that containerd, kubelet and the pods' hostPath volumes
// (the flannel DaemonSet's /run/flannel, /etc/cni/net.d, /opt/cni/bin) see
// the node's own, as on a machine of its own. /run/netns is the node's
// too: containerd's pod namespaces are bind mounts there, and they must
// vanish with the node's mount namespace, not linger in the host's.
func nodeOwnDirs() []string {
	return []string{
		"/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni",
		"/run/containerd", "/run/flannel", "/run/netns",
		"/etc/cni/net.d", "/opt/cni/bin", "/var/log/pods", "/var/log/containers",
	}
}

// nodeSysctls are the kernel settings kubelet insists on (it writes them
// unless protectKernelDefaults, which makes it refuse to start instead).
// They are global, not per namespace: inside the node's mount namespace a
// file with the wanted value is bind-mounted over each, so kubelet finds
// them set and the host keeps its own.
func nodeSysctls() map[string]string {
	return map[string]string{
		"vm/overcommit_memory":      "1",
		"vm/panic_on_oom":           "0",
		"kernel/panic":              "10",
		"kernel/panic_on_oops":      "1",
		"kernel/keys/root_maxkeys":  "1000000",
		"kernel/keys/root_maxbytes": "25000000",
	}
}

// nodeAt is a node of the Kubernetes lab in dir, for reading its files
// (subnet.env, the holder's pid) from another process.
func nodeAt(dir, name string) *kubeNode { return &kubeNode{dir: filepath.Join(kubeDir(dir), name)} }

func (n *kubeNode) root(p string) string  { return filepath.Join(n.dir, "root", p) }
func (n *kubeNode) readyFile() string     { return filepath.Join(n.dir, "mounts.ready") }
func (n *kubeNode) socket() string        { return n.root("/run/containerd/containerd.sock") }
func (n *kubeNode) holderPidFile() string { return filepath.Join(n.dir, "holder.pid") }

// prepare creates the node's directories and files, and the mount points
// on the host that its mount namespace binds over (empty directories).
func (n *kubeNode) prepare(cniBinDir string) error {
	for _, d := range nodeOwnDirs() {
		if err := os.MkdirAll(n.root(d), 0o755); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("node %s: mount point %s on the host: %w", n.Name, d, err)
		}
	}
	for name, val := range nodeSysctls() {
		p := filepath.Join(n.dir, "sysctl", strings.ReplaceAll(name, "/", "."))
		if err := writeFile(p, val+"\n"); err != nil {
			return err
		}
	}
	// The DaemonSet's init container copies the flannel plugin into
	// /opt/cni/bin: the node's own copy of the reference plugins keeps the
	// host's directory untouched.
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if err := copyFile(filepath.Join(cniBinDir, p), n.root(filepath.Join("/opt/cni/bin", p)), 0o755); err != nil {
			return fmt.Errorf("node %s: %w (scripts/install-cni-tools.sh installs the reference plugins)", n.Name, err)
		}
	}
	return nil
}

// mountScript runs in the node's new mount namespace (already in its
// network namespace): a fresh sysfs shows the node's interfaces, the
// cgroup hierarchies are mounted again on it (as `ip netns exec` does not:
// there they vanish), then the node's own directories and sysctl files.
func (n *kubeNode) mountScript(hs []cgroupHierarchy) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	// The new mount namespace starts as a copy of the host's, with a copy
	// of every namespace bind mount there (other labs', other tests' in
	// /run/netns): each would keep its namespace alive after its owner
	// deleted it, for as long as this node runs. They go first. One whose
	// file its owner removed meanwhile is already going (the kernel
	// detaches mounts on a deleted file in every namespace): no error.
	b.WriteString("grep ' - nsfs ' /proc/self/mountinfo | cut -d' ' -f5 | sort -r | while read -r m; do umount -l \"$m\" 2>/dev/null || [ ! -e \"$m\" ]; done\n")
	b.WriteString("mount -t sysfs -o nosuid,nodev,noexec sysfs /sys\n")
	v2only := len(hs) == 1 && hs[0].Dir == "/sys/fs/cgroup"
	if !v2only {
		b.WriteString("mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup /sys/fs/cgroup\n")
	}
	for _, h := range hs {
		q := shellQuote(h.Dir)
		if h.FSType == "cgroup2" {
			fmt.Fprintf(&b, "mkdir -p %s && mount -t cgroup2 cgroup2 %s\n", q, q)
			continue
		}
		fmt.Fprintf(&b, "mkdir -p %s && mount -t cgroup -o %s cgroup %s\n", q, shellQuote(h.Opts), q)
	}
	for _, d := range nodeOwnDirs() {
		fmt.Fprintf(&b, "mount --bind %s %s\n", shellQuote(n.root(d)), shellQuote(d))
	}
	for name := range nodeSysctls() {
		src := filepath.Join(n.dir, "sysctl", strings.ReplaceAll(name, "/", "."))
		fmt.Fprintf(&b, "mount --bind %s %s\n", shellQuote(src), shellQuote("/proc/sys/"+name))
	}
	fmt.Fprintf(&b, "touch %s\nexec sleep infinity\n", shellQuote(n.readyFile()))
	return b.String()
}

// startHolder starts the process that holds the node's mount namespace:
// it joins the node's cgroup, enters the node's network namespace,
// unshares the mount namespace (private: nothing propagates to the host),
// mounts, and sleeps. Every other process of the node enters its
// namespaces (nodeArgv).
func (n *kubeNode) startHolder(ctx context.Context, hs []cgroupHierarchy) error {
	script := joinScript(hs, n.cgroup) + `exec nsenter --net=/run/netns/` + n.NS +
		` -- unshare --mount --propagation private -- "$@"`
	p, err := testbed.StartProc(ctx, testbed.ProcOptions{
		LogFile: filepath.Join(n.dir, "holder.log"), Role: "holder-" + n.Name,
		Argv:          []string{"sh", "-c", script, "sh", "sh", "-c", n.mountScript(hs)},
		DieWithParent: true,
	})
	if err != nil {
		return err
	}
	n.holder = p
	// `lab exec NODE` enters the node's namespaces through the holder.
	if err := writeFile(n.holderPidFile(), strconv.Itoa(p.Pid)); err != nil {
		return err
	}
	for !exists(n.readyFile()) {
		select {
		case <-p.Done():
			return fmt.Errorf("node %s: mount namespace set-up failed (%v): %s", n.Name, p.Wait(), testbed.LogTail(p.LogFile))
		case <-ctx.Done():
			return fmt.Errorf("node %s: mount namespace not ready: %w", n.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// start runs argv in the node: in its cgroup and both its namespaces. It
// dies with the lab process (whose pods, in the node's cgroup, `lab down`
// kills).
func (n *kubeNode) start(ctx context.Context, hs []cgroupHierarchy, role string, env []string, argv ...string) (*testbed.Proc, error) {
	ns := fmt.Sprintf("/proc/%d/ns/", n.holder.Pid)
	script := joinScript(hs, n.cgroup) + "exec nsenter --net=" + ns + "net --mount=" + ns + `mnt -- "$@"`
	p, err := testbed.StartProc(ctx, testbed.ProcOptions{
		LogFile: filepath.Join(n.dir, role+".log"), Role: role + "-" + n.Name, Env: env,
		Argv:          append([]string{"sh", "-c", script, "sh"}, argv...),
		DieWithParent: true,
	})
	if err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)
	return p, nil
}

// waitFile waits for path to exist while p runs.
func waitFile(ctx context.Context, p *testbed.Proc, path, what string) error {
	start := time.Now()
	for !exists(path) {
		if !p.Running() {
			return fmt.Errorf("%s exited while starting (%v); end of %s:\n%s", what, p.Wait(), p.LogFile, testbed.LogTail(p.LogFile))
		}
		if err := ctxwait.Sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("%s not up after %s (no %s): %w; end of %s:\n%s", what, time.Since(start).Round(time.Second), path, err, p.LogFile, testbed.LogTail(p.LogFile))
		}
	}
	return nil
}

func writeFile(path, data string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(data), 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}
