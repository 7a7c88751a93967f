// Package preflight tells, before flanneld sets anything up, whether the
// host or container it runs in grants what the configured backend needs
// beyond NET_ADMIN: the TUN device (udp, userspace WireGuard),
// CAP_SYS_ADMIN (ipsec's charon runs in a mount namespace of its own) and
// CAP_BPF with CAP_PERFMON (the eBPF fast path). The shipped DaemonSet
// grants these only when asked, so a missing one is the likely cause, and
// the error names the setting to add.
package preflight

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/config"
)

// TunPatch is the DaemonSet change that gives flanneld the TUN device,
// written as the operator applies it (docs/INSTALL.md shows it whole).
const TunPatch = `add to the DaemonSet a volume "tun" (hostPath: {path: /dev/net/tun, type: CharDevice}) and mount it in the kube-flannel container at /dev/net/tun (the Helm chart does this for flannel.backend udp, wireguard and ipsec; see docs/INSTALL.md, "Backends that need more")`

// EBPFPatch is the DaemonSet change that lets flanneld load the eBPF fast
// path's programs.
const EBPFPatch = `add "BPF" and "PERFMON" to the kube-flannel container's securityContext.capabilities.add (deploy/patches/ebpf.yaml; the Helm chart does this for flannel.datapath=ebpf), or set "Datapath" back to "kernel"`

// SysAdminPatch is the DaemonSet change that lets charon start.
const SysAdminPatch = `add "SYS_ADMIN" to the kube-flannel container's securityContext.capabilities.add (the Helm chart does this for flannel.backend=ipsec; see docs/INSTALL.md, "Backends that need more")`

// Host names where the facts are read; the zero value means this host's
// real paths.
type Host struct {
	DevTun     string // /dev/net/tun
	ProcStatus string // /proc/self/status
}

func (h Host) withDefaults() Host {
	if h.DevTun == "" {
		h.DevTun = "/dev/net/tun"
	}
	if h.ProcStatus == "" {
		h.ProcStatus = "/proc/self/status"
	}
	return h
}

// Check returns an error naming the missing setting when cfg's backend
// cannot run here.
func (h Host) Check(cfg *config.Config) error {
	h = h.withDefaults()
	var errs []error
	if why := h.tunNeeded(cfg); why != "" {
		if err := openTun(h.DevTun); err != nil {
			errs = append(errs, fmt.Errorf("the %s backend needs the TUN device %s (%s), and opening it failed: %w; %s; on a host outside Kubernetes, modprobe tun",
				cfg.BackendType, h.DevTun, why, err, TunPatch))
		}
	}
	if cfg.BackendType == "ipsec" {
		has, err := h.hasCap(unix.CAP_SYS_ADMIN)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("the ipsec backend needs CAP_SYS_ADMIN and its capabilities cannot be read: %w", err))
		case !has:
			errs = append(errs, fmt.Errorf("the ipsec backend needs CAP_SYS_ADMIN (charon runs in a mount namespace of its own), which this process lacks: %s", SysAdminPatch))
		}
	}
	if cfg.Datapath == config.DatapathEBPF {
		if err := h.ebpfCaps(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ebpfCaps: loading the fast path takes CAP_BPF, and its programs read
// conntrack entries, which the verifier allows only with CAP_PERFMON;
// CAP_SYS_ADMIN covers both.
func (h Host) ebpfCaps() error {
	readErr := func(err error) error {
		return fmt.Errorf("the eBPF fast path needs CAP_BPF and CAP_PERFMON and the capabilities cannot be read: %w", err)
	}
	if all, err := h.hasCap(unix.CAP_SYS_ADMIN); err != nil {
		return readErr(err)
	} else if all {
		return nil
	}
	var missing []string
	for c, name := range map[int]string{unix.CAP_BPF: "CAP_BPF", unix.CAP_PERFMON: "CAP_PERFMON"} {
		has, err := h.hasCap(c)
		if err != nil {
			return readErr(err)
		}
		if !has {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf(`"Datapath": "ebpf" needs CAP_BPF (to load the fast path's programs) and CAP_PERFMON (they read conntrack entries), and this process lacks %s: %s`,
		strings.Join(missing, " and "), EBPFPatch)
}

// tunNeeded says why cfg's backend needs TUN for certain, or "" when it
// does not. WireGuard's "auto" needs it only when the kernel has no
// WireGuard, which only creating a kernel device tells (the module loads
// on demand); the wireguard backend names the fix itself then, as does
// ipsec's userspace ESP.
func (h Host) tunNeeded(cfg *config.Config) string {
	switch cfg.BackendType {
	case "udp":
		return "flannel0 carries the traffic"
	case "wireguard":
		var o struct{ Implementation string }
		_ = json.Unmarshal(cfg.Backend, &o)
		if strings.EqualFold(o.Implementation, "userspace") {
			return `"Implementation":"userspace" runs wireguard-go on a TUN device`
		}
	}
	return ""
}

// openTun opens the device as the backends will: a missing node and a
// device cgroup that denies it both show here. Opening alone creates no
// interface.
func openTun(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// hasCap reads the effective capability set.
func (h Host) hasCap(c int) (bool, error) {
	data, err := os.ReadFile(h.ProcStatus)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("%s: CapEff %q: %w", h.ProcStatus, v, err)
			}
			return set&(1<<uint(c)) != 0, nil
		}
	}
	return false, fmt.Errorf("%s has no CapEff line", h.ProcStatus)
}
