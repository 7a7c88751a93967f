package antispoof

import "fmt"

// LogPrefix marks the frames the spoofed chain logs to the policy drop log
// (internal/droplog).
const LogPrefix = "flannel-antispoof"

// SetDropLog makes the spoofed chain log a sample of what it drops to an
// NFLOG group (at most rate frames a second, limited in the kernel) from
// the next Sync on; group 0 turns it off. The counters still count every
// frame.
func (t *Table) SetDropLog(group uint16, rate int) {
	t.log = ""
	if group > 0 {
		rate = max(rate, 1)
		t.log = fmt.Sprintf(`limit rate %d/second burst %d packets log prefix "%s" group %d`, rate, rate, LogPrefix, group)
	}
}

// PodOf names the pod behind a bridge port, for the drop log: a forged
// frame's source address says nothing about who sent it, its port does.
// Empty names for a port of no known pod.
func (c *Controller) PodOf(port string) (namespace, name string) { return c.podOf(port) }
