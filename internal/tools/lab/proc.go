package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// roleLab is the role of the lab process (`flannelctl lab serve`) in its
// record; the testbed names the processes it starts ("flanneld-n1").
const roleLab = "lab"

// recordedProc is a process the lab recorded in its state dir, the lab
// process or one the testbed started, so that the lab's other commands
// (status, check, down) find it from another process, and tell it from an
// unrelated process that got the same pid later. The JSON fields are those
// of testbed.Proc.
type recordedProc struct {
	Pid       int
	Role      string
	NS        string
	Argv      []string
	LogFile   string
	StartTime uint64 // clock ticks since boot
}

// recordLabProc records the lab process, just started as argv.
func recordLabProc(dir string, pid int, argv []string) (*recordedProc, error) {
	st, err := procStat(pid)
	if err != nil {
		return nil, fmt.Errorf("lab process %d: %w", pid, err)
	}
	p := &recordedProc{Pid: pid, Role: roleLab, Argv: argv, StartTime: st.Starttime}
	if err := writeJSON(procPath(dir), p); err != nil {
		return nil, fmt.Errorf("record lab process: %w", err)
	}
	return p, nil
}

// readLabProc returns the recorded lab process, or nil when none is
// recorded.
func readLabProc(dir string) (*recordedProc, error) {
	p, err := readRecordedProc(procPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return p, err
}

func readRecordedProc(path string) (*recordedProc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := &recordedProc{}
	if err := json.Unmarshal(data, p); err != nil || p.Pid <= 0 || len(p.Argv) == 0 {
		return nil, fmt.Errorf("unreadable %s: %v", path, err)
	}
	return p, nil
}

func procStat(pid int) (procfs.ProcStat, error) {
	pr, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return pr.Stat()
}

// stat returns the process's stat if its pid still names the recorded
// process: same start time, and a command line that is its own (argv, or
// `ip netns exec` just before it execs argv). A dead one is never it.
func (p *recordedProc) stat() (procfs.ProcStat, bool) {
	if p == nil {
		return procfs.ProcStat{}, false
	}
	st, err := procStat(p.Pid)
	if err != nil || st.Starttime != p.StartTime || st.State == "Z" || st.State == "X" {
		return st, false
	}
	cmdline, ok := readCmdline(p.Pid)
	if !ok {
		// An exiting process has no command line any more but is not
		// gone yet; start time and state told it from a newcomer.
		return st, true
	}
	// cmdline[1] covers an interpreter running a script.
	want := filepath.Base(p.Argv[0])
	for i, arg := range cmdline[:min(2, len(cmdline))] {
		if b := filepath.Base(arg); b == want || (i == 0 && b == "ip") {
			return st, true
		}
	}
	return st, false
}

// alive reports whether the recorded process still runs.
func (p *recordedProc) alive() bool {
	_, ok := p.stat()
	return ok
}

// readCmdline reads a live process's command line. While the process is
// in the middle of execve (`ip netns exec` becoming its command) the file
// reads empty for a moment: that is retried, not taken for a dead process,
// which down would then leave running.
func readCmdline(pid int) ([]string, bool) {
	pr, err := procfs.NewProc(pid)
	if err != nil {
		return nil, false
	}
	for range 50 {
		cmdline, err := pr.CmdLine()
		if err != nil {
			return nil, false
		}
		if len(cmdline) > 0 {
			return cmdline, true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, false
}

// signal signals the process, and its whole group when it leads one and
// is a testbed process (the lab process handles SIGTERM itself and takes
// its short-lived helpers down with it).
func (p *recordedProc) signal(sig unix.Signal) error {
	st, ok := p.stat()
	if !ok {
		return nil
	}
	target := p.Pid
	if st.PGRP == p.Pid && p.Role != roleLab {
		target = -p.Pid
	}
	if err := unix.Kill(target, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Role, p.Pid, err)
	}
	return nil
}

// stop sends SIGTERM, waits up to grace for the process to be gone, then
// kills it; killed says whether it needed SIGKILL.
func (p *recordedProc) stop(grace time.Duration) (killed bool, err error) {
	if !p.alive() {
		return false, nil
	}
	if err := p.signal(unix.SIGTERM); err != nil {
		return false, err
	}
	if p.waitGone(grace) {
		return false, nil
	}
	if err := p.signal(unix.SIGKILL); err != nil {
		return true, err
	}
	if !p.waitGone(5 * time.Second) {
		return true, fmt.Errorf("%s (pid %d) still alive after SIGKILL", p.Role, p.Pid)
	}
	return true, nil
}

func (p *recordedProc) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !p.alive()
}
