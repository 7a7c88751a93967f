package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/flannelgo/flannel/internal/subnetenv"
)

// StartFlanneld starts flanneld in the node's namespace with
//
//	--etcd-endpoints=<EtcdEndpoint> --iface=eth0 --subnet-file=<node.SubnetFile> -v=2
//
// followed by args (a later flag overrides an earlier one), output
// appended to node.LogFile. The binary is the node's FlanneldPath, or
// else the testbed's.
func (tb *Testbed) StartFlanneld(ctx context.Context, n *Node, args ...string) error {
	return tb.StartFlanneldEnv(ctx, n, nil, args...)
}

// StartFlanneldEnv is StartFlanneld with extra KEY=VALUE environment
// entries (FLANNELD_* variables, for instance).
func (tb *Testbed) StartFlanneldEnv(ctx context.Context, n *Node, env []string, args ...string) error {
	if p := tb.flanneld(n); p != nil && p.Running() {
		return fmt.Errorf("start flanneld on %s: already running as pid %d", n.Name, p.Pid)
	}
	bin := n.FlanneldPath
	if bin == "" {
		bin = tb.Opts.FlanneldPath
	}
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("flanneld"); err != nil {
			return fmt.Errorf("start flanneld on %s: no flanneld binary: set FlanneldPath (go build -o DIR/flanneld ./cmd/flanneld): %w", n.Name, err)
		}
	}
	argv := append([]string{
		bin,
		"--etcd-endpoints=" + tb.EtcdEndpoint(),
		"--iface=" + n.Iface,
		"--subnet-file=" + n.SubnetFile,
		"-v=2",
	}, args...)
	// The wireguard backend's key and control socket and the ipsec
	// backend's charon directory default to fixed paths that the nodes of
	// a testbed, sharing one file system, must not share; env entries
	// given by the caller come later and win.
	// libcni's cache of CNIPods is per node too (upstream ignores the
	// variable).
	env = append([]string{"WIREGUARD_KEY_FILE=" + WireGuardKeyFile(n), "FLANNEL_WIREGUARD_SOCKET_DIR=" + n.Dir,
		"FLANNEL_IPSEC_DIR=" + filepath.Join(n.Dir, "ipsec"), "FLANNELD_CNI_CACHE_DIR=" + filepath.Join(CNIDir(n), "cache")}, env...)
	p, err := tb.startProc(ctx, ProcOptions{NS: n.NS, LogFile: n.LogFile, Role: n.FlanneldRole(), Env: env, Argv: argv})
	if err != nil {
		return fmt.Errorf("start flanneld on %s: %w", n.Name, err)
	}
	tb.mu.Lock()
	n.flanneld = p
	tb.mu.Unlock()
	return nil
}

// FlanneldRole is the role of the node's flanneld in a Recorder's record.
func (n *Node) FlanneldRole() string { return roleFlanneld + n.Name }

// WireGuardKeyFile is where the node's flanneld keeps its WireGuard
// private key.
func WireGuardKeyFile(n *Node) string { return filepath.Join(n.Dir, "wgkey") }

func (tb *Testbed) flanneld(n *Node) *Proc {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return n.flanneld
}

// Flanneld returns the node's flanneld process (running or not), or nil.
func (tb *Testbed) Flanneld(n *Node) *Proc { return tb.flanneld(n) }

// StopFlanneld sends SIGTERM to the node's flanneld and waits (SIGKILL
// after 10 s).
func (tb *Testbed) StopFlanneld(n *Node) error {
	if p := tb.flanneld(n); p != nil {
		if err := p.Stop(); err != nil {
			return fmt.Errorf("stop flanneld on %s: %w", n.Name, err)
		}
	}
	return nil
}

// KillFlanneld kills the node's flanneld with SIGKILL (a crash).
func (tb *Testbed) KillFlanneld(n *Node) error {
	if p := tb.flanneld(n); p != nil {
		if err := p.Kill(); err != nil {
			return fmt.Errorf("kill flanneld on %s: %w", n.Name, err)
		}
	}
	return nil
}

// WaitSubnetFile waits until the node's subnet.env exists and parses. It
// gives up early, with the end of the log, if the node's flanneld exits.
func (tb *Testbed) WaitSubnetFile(ctx context.Context, n *Node) (*subnetenv.Env, error) {
	p := tb.flanneld(n)
	var exited <-chan struct{}
	if p != nil {
		exited = p.Done()
	}
	for {
		env, err := subnetenv.Read(n.SubnetFile)
		if err == nil {
			return env, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("node %s: flanneld exited (%v) before writing %s; end of %s:\n%s",
				n.Name, p.Wait(), n.SubnetFile, n.LogFile, LogTail(n.LogFile))
		case <-ctx.Done():
			if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("node %s: %w", n.Name, err)
			}
			return nil, fmt.Errorf("node %s: no %s yet: %w; see %s", n.Name, n.SubnetFile, ctx.Err(), n.LogFile)
		case <-time.After(pollEvery):
		}
	}
}

// LogTail returns the last lines of a log file, for error messages.
func LogTail(path string) string {
	const tailBytes = 2048
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	if len(data) > tailBytes {
		data = data[len(data)-tailBytes:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return string(data)
}
