// Command flannelctl is the operator's tool for flannel. Its `lab`
// command runs a real multi-node flannel cluster in network namespaces on
// this machine.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/klog/v2"
)

const usage = `flannelctl: the flannel operator's tool

usage:
  flannelctl lab up     [--name N] [--nodes 3] [--backend vxlan|host-gw|udp|wireguard] [--pods-per-node 1]
                        [--segments 1|2] [--underlay-mtu 1500] [--pod-mtu auto|N] [--bin-dir DIR]
                        [--kubernetes [--image-tar FILE] [--manifest FILE]]
  flannelctl lab status [--name N]
  flannelctl lab check  [--name N]
  flannelctl lab exec   [--name N] POD|NODE -- CMD [ARGS...]
  flannelctl lab down   [--name N]
  flannelctl lab kubectl    [--name N] -- KUBECTL ARGS...   (--kubernetes labs)
  flannelctl lab kubeconfig [--name N]
  flannelctl policy explain --from NS/POD --to NS/POD[:PORT/PROTO] [--kubeconfig FILE]
  flannelctl policy drops   [--node N | --all-nodes] [--namespace NS] [--follow] [--output text|json]
  flannelctl lab doctor [--name N] NODE [DOCTOR FLAGS...]
  flannelctl doctor     [--etcd-endpoints ... | --kube-subnet-mgr --kubeconfig-file F]
                        [--subnet-file F] [--healthz IP:PORT] [--output text|json]

Run 'flannelctl lab CMD --help' for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the process exit code: 0 success, 1 failure, 2 usage.
func run(args []string, stdout, stderr io.Writer) int {
	defer klog.Flush()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "lab":
		return runLab(args[1:], stdout, stderr)
	case "policy":
		return runPolicy(args[1:], stdout, stderr)
	case "doctor":
		return runDoctor(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "flannelctl: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
