package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/flannelgo/flannel/internal/config"
)

// defaultProcSys is where the kernel's sysctls are.
const defaultProcSys = "/proc/sys"

// checkBrNetfilter refuses to run without the br_netfilter module in
// iptables mode, as upstream does: without it, traffic between pods on the
// same bridge skips iptables, so kube-proxy's service rules and network
// policies silently do not apply to it. The sysctl files exist exactly when
// the module is loaded. Upstream makes the check only in iptables mode
// (EnableNFTables skips it), and so do we: a node that upstream runs on
// must not be refused after the swap.
func checkBrNetfilter(procSys string, cfg *config.Config) error {
	if cfg.EnableNFTables {
		return nil
	}
	if procSys == "" {
		procSys = defaultProcSys
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{cfg.EnableIPv4, "bridge-nf-call-iptables"}, {cfg.EnableIPv6, "bridge-nf-call-ip6tables"}} {
		if !f.on {
			continue
		}
		p := filepath.Join(procSys, "net", "bridge", f.name)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to check br_netfilter: %s does not exist, so the br_netfilter kernel module is not loaded; "+
				"run `modprobe br_netfilter` (and list it in /etc/modules-load.d/ to load it at boot), then start flanneld again", p)
		}
	}
	return nil
}
