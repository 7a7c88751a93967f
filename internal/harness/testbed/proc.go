package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

const (
	stopGrace = 10 * time.Second // SIGTERM to SIGKILL
	killWait  = 5 * time.Second  // SIGKILL to giving up
	pollEvery = 100 * time.Millisecond
)

// Proc is a process the testbed started inside a namespace, in a process
// group of its own. A ProcRecorder, if given, is told when it starts and
// when it is gone (`flannelctl lab` records it so that another process can
// stop it).
type Proc struct {
	Pid       int
	Role      string // "etcd", "flanneld-n1", or "" for StartProcess
	NS        string
	Argv      []string
	LogFile   string
	StartTime uint64 // clock ticks since boot; tells a reused pid apart

	cmd  *exec.Cmd
	rec  ProcRecorder
	done chan struct{}
	err  error

	mu     sync.Mutex
	exited bool // our child exited but is not reaped: its pid is still ours
}

// ProcOptions describe a process for StartProc.
type ProcOptions struct {
	// NS is the network namespace to run in; "" is the caller's.
	NS string
	// LogFile receives stdout and stderr (appended; its directory is made).
	LogFile string
	// Env entries (KEY=VALUE) are added to the inherited environment,
	// which loses its ETCD_*, ETCDCTL_* and FLANNELD_* variables.
	Env []string
	// Argv is the command and its arguments.
	Argv []string
	// Role names the process to a recorder ("etcd", "flanneld-n1").
	Role string
	// Recorder, if set, is told when the process has started and when it
	// is gone.
	Recorder ProcRecorder
	// DieWithParent kills the process (SIGKILL) when the thread that
	// started it exits, so a test binary killed by its timeout leaves no
	// server behind. Without it the process gets a session of its own and
	// outlives its starter (a lab that `flannelctl lab up` leaves running).
	DieWithParent bool
}

// StartProcess starts argv inside ns with stdout and stderr appended to
// logFile. ctx bounds only the start: the process runs until Stop, Kill or
// Close. The environment is inherited without ETCD_* and FLANNELD_*
// variables, so the testbed does not depend on the caller's shell.
func (tb *Testbed) StartProcess(ctx context.Context, ns, logFile string, argv ...string) (*Proc, error) {
	return tb.startProc(ctx, ProcOptions{NS: ns, LogFile: logFile, Argv: argv})
}

// StartProcessEnv is StartProcess with extra KEY=VALUE environment entries.
func (tb *Testbed) StartProcessEnv(ctx context.Context, ns, logFile string, env []string, argv ...string) (*Proc, error) {
	return tb.startProc(ctx, ProcOptions{NS: ns, LogFile: logFile, Env: env, Argv: argv})
}

// ProcRecorder keeps a record of running processes for a program that
// must find them again from another process (internal/tools/lab). Started is
// called once the process runs (an error stops it again); Exited once it
// is gone and reaped.
type ProcRecorder interface {
	Started(p *Proc) error
	Exited(p *Proc)
}

// startProc starts a process of this testbed: told to its recorder and
// stopped by Close.
func (tb *Testbed) startProc(ctx context.Context, o ProcOptions) (*Proc, error) {
	if tb.Opts.Recorder != nil {
		o.Recorder = tb.Opts.Recorder
	}
	p, err := StartProc(ctx, o)
	if err != nil {
		return nil, err
	}
	tb.mu.Lock()
	if tb.procs == nil {
		tb.procs = map[*Proc]struct{}{}
	}
	tb.procs[p] = struct{}{}
	tb.mu.Unlock()
	klog.V(2).Infof("testbed %s: started %s in %s, pid %d, log %s", tb.Name, strings.Join(o.Argv, " "), o.NS, p.Pid, o.LogFile)
	return p, nil
}

// StartProc is the one process supervisor of the testbed, `flannelctl
// lab` and the tests' servers (etcd, kube-apiserver): it starts o.Argv,
// in o.NS when set, in a process group of its own. Stop and Kill signal
// the group; its exit is reaped in the background (Done, Wait).
func StartProc(ctx context.Context, o ProcOptions) (*Proc, error) {
	if len(o.Argv) == 0 {
		return nil, fmt.Errorf("start process in %s: no command", o.NS)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", o.Argv[0], o.NS, err)
	}
	if err := os.MkdirAll(filepath.Dir(o.LogFile), 0o755); err != nil {
		return nil, fmt.Errorf("start %s: log dir: %w", o.Argv[0], err)
	}
	log, err := os.OpenFile(o.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", o.Argv[0], err)
	}
	defer log.Close()
	argv := o.Argv
	if o.NS != "" {
		// `ip netns exec` also remounts /sys for the namespace, so the
		// process sees its own interfaces there; it execs argv, keeping
		// the pid.
		argv = append([]string{"ip", "netns", "exec", o.NS}, o.Argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(cleanEnviron(), o.Env...)
	// Its own group, so that it can be signalled as a whole.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if o.DieWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", o.Argv[0], o.NS, err)
	}
	p := &Proc{
		Pid: cmd.Process.Pid, Role: o.Role, NS: o.NS, Argv: o.Argv, LogFile: o.LogFile,
		cmd: cmd, rec: o.Recorder, done: make(chan struct{}),
	}
	// Our unreaped child: its /proc entry cannot belong to anyone else.
	if st, err := procStat(p.Pid); err == nil {
		p.StartTime = st.Starttime
	}
	if p.rec != nil {
		if err := p.rec.Started(p); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, fmt.Errorf("start %s in %s: record it: %w", o.Argv[0], o.NS, err)
		}
	}
	go p.reap()
	return p, nil
}

// cleanEnviron is this process's environment without the variables that
// would configure etcd or flanneld behind the caller's back.
func cleanEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "ETCDCTL_") || strings.HasPrefix(kv, "FLANNELD_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// reap waits for our child without reaping it first (WNOWAIT), marks it
// exited under mu, then reaps it: signal() holds mu, so it never signals a
// pid that could have been reused.
func (p *Proc) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	p.err = p.cmd.Wait()
	if p.rec != nil {
		p.rec.Exited(p)
	}
	close(p.done)
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process is still alive.
func (p *Proc) Running() bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.Done()
	return p.err
}

// Stop sends SIGTERM to the process group, waits up to 10 s, then SIGKILL.
func (p *Proc) Stop() error {
	if err := p.signal(unix.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.Done():
		return nil
	case <-time.After(stopGrace):
		klog.Warningf("pid %d (%s) ignored SIGTERM for %s, killing it", p.Pid, p.Argv[0], stopGrace)
	}
	return p.Kill()
}

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Proc) Kill() error {
	if err := p.signal(unix.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.Done():
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("pid %d (%s) still alive %s after SIGKILL", p.Pid, p.Argv[0], killWait)
	}
}

func (p *Proc) signal(sig unix.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil
	}
	return ignoreESRCH(unix.Kill(-p.Pid, sig))
}

func ignoreESRCH(err error) error {
	if err == nil || errors.Is(err, unix.ESRCH) {
		return nil
	}
	return fmt.Errorf("signal: %w", err)
}

func procStat(pid int) (procfs.ProcStat, error) {
	pr, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return pr.Stat()
}

func (tb *Testbed) procsIn(ns string) []*Proc {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []*Proc
	for p := range tb.procs {
		if p.NS == ns {
			out = append(out, p)
		}
	}
	return out
}

// stopAll stops every process: flanneld and the others first, etcd last
// (a stopping flanneld may still talk to it).
func (tb *Testbed) stopAll() error {
	tb.mu.Lock()
	var first []*Proc
	for p := range tb.procs {
		if p != tb.etcd {
			first = append(first, p)
		}
	}
	etcd := tb.etcd
	tb.mu.Unlock()
	err := stopConcurrently(first)
	if etcd != nil {
		err = errors.Join(err, etcd.Stop())
	}
	tb.mu.Lock()
	for p := range tb.procs {
		if !p.Running() {
			delete(tb.procs, p)
		}
	}
	tb.mu.Unlock()
	return err
}

func stopConcurrently(procs []*Proc) error {
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.Stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
