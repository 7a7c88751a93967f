package main

import (
	"flag"

	"github.com/flannelgo/flannel/internal/daemon/policy"
)

// dropLogOptions are the policy drop log's flags (none upstream).
type dropLogOptions struct{ policy.DropLogOptions }

func (d *dropLogOptions) addFlags(fs *flag.FlagSet) {
	fs.UintVar(&d.Group, "policy-drop-log-group", 100, "with --network-policy, the NFLOG group the kernel logs a sample of the packets network policy (and anti-spoofing) drops to, for `flannelctl policy drops`; 0 turns the drop log off; not an upstream flag")
	fs.IntVar(&d.Rate, "policy-drop-log-rate", 100, "the most dropped packets per second and direction the kernel logs (its own rate limit: a flood costs flanneld no more; the drop counters count every packet); not an upstream flag")
	fs.StringVar(&d.Output, "policy-drop-log-output", "", "also write each drop record as a JSON line: \"log\" to flanneld's log, or a file path (appended); empty: only served at /policy/drops; not an upstream flag")
}
