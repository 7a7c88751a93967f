package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// labProc records the lab process so that down and status find it, and
// can tell it from an unrelated process that got the same pid later.
type labProc struct {
	Pid       int
	StartTime uint64 // clock ticks since boot
	Exe       string
}

func recordLabProc(dir string, pid int) (*labProc, error) {
	p := &labProc{Pid: pid}
	st, err := procStat(pid)
	if err != nil {
		return nil, fmt.Errorf("lab process %d: %w", pid, err)
	}
	p.StartTime = st.Starttime
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		p.Exe = exe
	}
	if err := writeJSON(procPath(dir), p); err != nil {
		return nil, fmt.Errorf("record lab process: %w", err)
	}
	return p, nil
}

// readLabProc returns the recorded lab process, or nil when none is
// recorded.
func readLabProc(dir string) (*labProc, error) {
	data, err := os.ReadFile(procPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p := &labProc{}
	if err := json.Unmarshal(data, p); err != nil || p.Pid <= 0 {
		return nil, fmt.Errorf("unreadable %s: %v", procPath(dir), err)
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

// alive reports whether the recorded pid still is the lab process.
func (p *labProc) alive() bool {
	if p == nil {
		return false
	}
	st, err := procStat(p.Pid)
	if err != nil || st.Starttime != p.StartTime || st.State == "Z" || st.State == "X" {
		return false
	}
	if p.Exe == "" {
		return true
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid))
	if err != nil {
		// An exiting process has no exe any more but is not gone yet;
		// start time and state already told it apart from a newcomer.
		return true
	}
	// A rebuilt binary shows as "<path> (deleted)".
	return strings.TrimSuffix(exe, " (deleted)") == strings.TrimSuffix(p.Exe, " (deleted)")
}

// stop sends SIGTERM, waits for the lab to tear itself down, and kills it
// after grace.
func (p *labProc) stop(grace time.Duration, logPath string) error {
	if !p.alive() {
		return nil
	}
	if err := unix.Kill(p.Pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal lab process %d: %w", p.Pid, err)
	}
	if waitGone(p, grace) {
		return nil
	}
	if err := unix.Kill(p.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill lab process %d: %w", p.Pid, err)
	}
	if !waitGone(p, 5*time.Second) {
		return fmt.Errorf("lab process %d still alive after SIGKILL", p.Pid)
	}
	return fmt.Errorf("lab process %d did not stop within %s of SIGTERM and was killed; see %s", p.Pid, grace, logPath)
}

func waitGone(p *labProc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !p.alive()
}
