package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// UpOptions are `lab up`'s settings beyond the Spec.
type UpOptions struct {
	StateRoot string // "" = /run/flannelctl/lab
	BinDir    string // --bin-dir: where flanneld and flannel are
	// Self is the flannelctl binary the lab process runs ("" = this one).
	Self string
	// Verbosity is passed to the lab process as -v.
	Verbosity int
	Out       io.Writer
}

// Up starts the lab process, shows its progress, and prints the lab's
// nodes and pods once it is up. The lab process keeps running after Up
// returns; on a failed start it has already removed what it built.
func Up(ctx context.Context, spec Spec, o UpOptions) error {
	start := time.Now()
	if err := NeedRoot(); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	spec.StateDir = StateDir(o.StateRoot, spec.Name)
	if err := checkFree(spec.Name, spec.StateDir); err != nil {
		return err
	}
	say := func(format string, args ...any) {
		fmt.Fprintf(o.Out, "lab %s: %s\n", spec.Name, fmt.Sprintf(format, args...))
	}
	if spec.Kube != nil {
		spec.PodsPerNode = 0 // the cluster's pods are its users' business
	}
	podMTU := "auto (FLANNEL_MTU)"
	if spec.PodMTU > 0 {
		podMTU = strconv.Itoa(spec.PodMTU)
	}
	say("%d node(s) on %d segment(s), backend %s, %d pod(s) per node, underlay MTU %d, pod MTU %s",
		spec.Nodes, spec.Segments, spec.Backend, spec.PodsPerNode, spec.UnderlayMTU, podMTU)
	child, progress, err := prepare(ctx, &spec, o, say)
	if err != nil {
		// Nothing runs yet: only the state dir's own files are to go.
		if rerr := removeOwn(spec.StateDir); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	say("lab process pid %d, log %s", child.Process.Pid, LogPath(spec.StateDir))
	if err := relay(ctx, child, progress, o.Out); err != nil {
		return fmt.Errorf("lab %s did not come up: %w\nLogs are kept in %s (lab.log, nodes/*/flanneld.log, etcd/etcd.log); `flannelctl lab down --name %s` removes them",
			spec.Name, err, spec.StateDir, spec.Name)
	}
	fmt.Fprintf(o.Out, "\nlab %s is up (%.1fs).\n\n", spec.Name, time.Since(start).Seconds())
	if err := Describe(ctx, o.Out, spec.StateDir); err != nil {
		return err
	}
	if spec.Kube != nil {
		fmt.Fprintf(o.Out, "\nnext: flannelctl lab kubectl --name %s -- get pods -A | export KUBECONFIG=$(flannelctl lab kubeconfig --name %s) | flannelctl lab down --name %s\n",
			spec.Name, spec.Name, spec.Name)
		return nil
	}
	fmt.Fprintf(o.Out, "\nnext: flannelctl lab check --name %s | flannelctl lab exec --name %s POD -- CMD | flannelctl lab down --name %s\n",
		spec.Name, spec.Name, spec.Name)
	return nil
}

// prepare finds the binaries, writes the spec and starts the lab process.
func prepare(ctx context.Context, spec *Spec, o UpOptions, say func(string, ...any)) (*exec.Cmd, *os.File, error) {
	if err := os.MkdirAll(spec.StateDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create state dir: %w", err)
	}
	if spec.Kube != nil {
		if err := prepareKube(spec, say); err != nil {
			return nil, nil, err
		}
		if err := writeJSON(specPath(spec.StateDir), spec); err != nil {
			return nil, nil, fmt.Errorf("write lab spec: %w", err)
		}
		return startLabProcess(*spec, o)
	}
	bins, err := FindBinaries(ctx, o.BinDir, spec.CNIBinDir, spec.StateDir, say)
	if err != nil {
		return nil, nil, err
	}
	spec.FlanneldPath, spec.PluginDir, spec.CNIBinDir = bins.Flanneld, bins.PluginDir, bins.CNIBinDir
	say("flanneld %s, CNI plugin %s, reference plugins %s",
		spec.FlanneldPath, filepath.Join(spec.PluginDir, "flannel"), spec.CNIBinDir)
	if err := writeJSON(specPath(spec.StateDir), spec); err != nil {
		return nil, nil, fmt.Errorf("write lab spec: %w", err)
	}
	return startLabProcess(*spec, o)
}

// checkFree refuses to start over a running or crashed lab of that name,
// or when the lab's address ranges are in use on this host.
func checkFree(name, dir string) error {
	lp, err := readLabProc(dir)
	if err != nil {
		return err
	}
	if lp.alive() {
		return fmt.Errorf("lab %s is already up (lab process pid %d); run `flannelctl lab down --name %s` first, or pick another --name", name, lp.Pid, name)
	}
	if _, err := os.Stat(topologyPath(dir)); err == nil {
		return fmt.Errorf("lab %s is left over from a lab process that is gone (crashed or killed); run `flannelctl lab down --name %s` first", name, name)
	}
	return testbed.CheckRangesFree(name)
}

// startLabProcess runs `<self> lab serve --state-dir DIR` in a session of
// its own (it outlives this command), output to lab.log, progress on fd 3.
func startLabProcess(spec Spec, o UpOptions) (*exec.Cmd, *os.File, error) {
	self := o.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return nil, nil, fmt.Errorf("find flannelctl binary for the lab process: %w", err)
		}
	}
	log, err := os.OpenFile(LogPath(spec.StateDir), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("lab log: %w", err)
	}
	defer log.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("progress pipe: %w", err)
	}
	defer pw.Close()
	cmd := exec.Command(self, "lab", "serve", "--state-dir", spec.StateDir, "-v", strconv.Itoa(o.Verbosity))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pr.Close()
		return nil, nil, fmt.Errorf("start lab process %s: %w", self, err)
	}
	if _, err := recordLabProc(spec.StateDir, cmd.Process.Pid, cmd.Args); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		pr.Close()
		return nil, nil, err
	}
	return cmd, pr, nil
}

// ProgressFD is the descriptor on which the lab process reports to `lab up`.
const ProgressFD = 3

// relay copies the lab process's progress to out until it reports ready
// (nil) or ends without doing so (the error it reported). Interrupting
// `lab up` stops the lab process, which removes what it built.
func relay(ctx context.Context, child *exec.Cmd, progress *os.File, out io.Writer) error {
	defer progress.Close()
	stop := context.AfterFunc(ctx, func() {
		fmt.Fprintln(out, "interrupted: stopping the lab process, which removes what it built")
		_ = child.Process.Signal(syscall.SIGTERM)
	})
	defer stop()
	var errLines []string
	sc := bufio.NewScanner(progress)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == msgReady:
			// The lab process runs on; it is not this command's to wait for.
			_ = child.Process.Release()
			return nil
		case strings.HasPrefix(line, msgProgress):
			fmt.Fprintln(out, strings.TrimPrefix(line, msgProgress))
		case strings.HasPrefix(line, msgError):
			errLines = append(errLines, strings.TrimPrefix(line, msgError))
		}
	}
	werr := child.Wait()
	if len(errLines) == 0 {
		return fmt.Errorf("the lab process exited (%v) without saying why; see %s", werr, "lab.log")
	}
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), errors.New(strings.Join(errLines, "\n")))
	}
	return errors.New(strings.Join(errLines, "\n"))
}
