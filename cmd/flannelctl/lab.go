//go:build !nodeimage

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/tools/lab"
)

// labCmd is one `flannelctl lab` subcommand.
type labCmd struct {
	name, args, help, example string
	run                       func(ctx context.Context, c *labCtx) int
	flags                     func(fs *flag.FlagSet, c *labCtx)
	// passArgs: flags after the first argument belong to the command run
	// (exec's CMD, doctor's flags, kubectl's), not to lab.
	passArgs bool
	hidden   bool
}

// labCtx carries the parsed flags and output streams of one invocation.
type labCtx struct {
	name, stateRoot string
	spec            lab.Spec
	podMTU, binDir  string
	kube            bool         // up --kubernetes
	kubeSpec        lab.KubeSpec // its paths
	stateDir        string       // serve only
	verbosity       int
	args            []string
	stdout, stderr  io.Writer
}

func labCommands() []labCmd {
	return []labCmd{
		{name: "up", help: upHelp, run: labUp, flags: upFlags, example: upExample},
		{name: "status", help: "Shows the lab process, etcd, each node's flanneld, subnet and MTU, and the pods.\nExits 1 when any of them is down.", run: labStatus,
			example: "  flannelctl lab status --name demo"},
		{name: "check", help: checkHelp, run: labCheck, example: "  flannelctl lab check --name demo"},
		{name: "exec", args: " POD|NODE -- CMD [ARGS...]", help: "Runs CMD in the namespace of a pod (n1-p1; in a Kubernetes lab NAMESPACE/NAME,\nwith this machine's tools in the pod's network namespace) or node (n1), with\nthis terminal's stdin/stdout/stderr; exits with CMD's exit code.", run: labExec, passArgs: true,
			example: "  flannelctl lab exec --name demo n1-p1 -- ping -c3 10.244.2.2\n  flannelctl lab exec --name demo n1 -- ip route\n  flannelctl lab exec --name k1 kube-system/coredns-5d8c9b7f4-abcde -- ip addr"},
		{name: "doctor", args: " NODE [DOCTOR FLAGS...]", help: "Runs `flannelctl doctor` inside the node's namespace with the lab's etcd, subnet file and\nhealth address; doctor flags (--output json) may follow NODE. Exits with doctor's code.", run: labDoctor, passArgs: true,
			example: "  flannelctl lab doctor --name demo n1\n  flannelctl lab doctor --name demo n2 --output json"},
		{name: "kubectl", args: " -- KUBECTL ARGS...", help: "Runs kubectl against a Kubernetes lab (lab up --kubernetes) as its admin; exits with kubectl's code.", run: labKubectl, passArgs: true,
			example: "  flannelctl lab kubectl --name k1 -- get nodes -o wide"},
		{name: "kubeconfig", help: "Prints the path of a Kubernetes lab's admin kubeconfig, valid on this machine while the lab runs.", run: labKubeconfig,
			example: "  export KUBECONFIG=$(flannelctl lab kubeconfig --name k1)"},
		{name: "down", help: "Stops the lab process (which stops flanneld and etcd and deletes the namespaces),\nthen removes whatever is left: also after the lab process crashed.", run: labDown,
			example: "  flannelctl lab down --name demo"},
		{name: "serve", help: "The lab process; `flannelctl lab up` starts it. Not for direct use.", run: labServe, flags: serveFlags, hidden: true},
	}
}

func labCommand() *cobra.Command {
	group := &cobra.Command{
		Use:   "lab",
		Short: "A real multi-node flannel cluster in network namespaces on this machine",
		Long: `A real multi-node flannel cluster in network namespaces on this machine: an
underlay, an embedded etcd, the real flanneld on every node and pods created
through the real CNI plugin; with --kubernetes, real Kubernetes nodes with
flannel installed from deploy/kube-flannel.yml. Run as root.`,
		Example: "  flannelctl lab up --name demo --nodes 3 --backend vxlan\n  flannelctl lab check --name demo\n  flannelctl lab down --name demo",
		Args:    noArgs,
		RunE:    needSubcommand,
	}
	for _, lc := range labCommands() {
		group.AddCommand(lc.command())
	}
	return group
}

// command builds the cobra command. Flags are defined on a Go FlagSet (as
// before the move to cobra, so each command's flag function stays as it
// was) and handed to cobra whole.
func (lc labCmd) command() *cobra.Command {
	c := &labCtx{}
	fs := flag.NewFlagSet("flannelctl lab "+lc.name, flag.ContinueOnError)
	fs.StringVar(&c.name, "name", "", "lab name, 1-6 characters a-z 0-9 (default: the only lab, else \"lab\")")
	fs.StringVar(&c.stateRoot, "state-root", "", "directory holding labs' state (default /run/flannelctl/lab)")
	// Of klog's flags only -v: the rest would drown --help.
	kfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(kfs)
	fs.Var(kfs.Lookup("v").Value, "v", "log verbosity (the lab process logs to <state>/lab.log)")
	if lc.flags != nil {
		lc.flags(fs, c)
	}
	short, _, _ := strings.Cut(lc.help, "\n")
	cmd := &cobra.Command{
		Use:     lc.name + lc.args,
		Short:   strings.TrimSuffix(short, "."),
		Long:    lc.help,
		Example: lc.example,
		Hidden:  lc.hidden,
		RunE: func(cmd *cobra.Command, args []string) error {
			c.args, c.stdout, c.stderr = args, cmd.OutOrStdout(), cmd.ErrOrStderr()
			c.verbosity, _ = strconv.Atoi(fs.Lookup("v").Value.String())
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if code := lc.run(ctx, c); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	cmd.Flags().AddGoFlagSet(fs)
	cmd.Flags().SetInterspersed(!lc.passArgs)
	return cmd
}

const upHelp = `Builds a flannel cluster in network namespaces on this machine and leaves it
running: an underlay (one L2 segment, or two joined by a router), an embedded
etcd in the hub namespace, the real flanneld in every node, and pods created
through the real flannel CNI plugin (flannel -> bridge + host-local, portmap).
A lab process (flannelctl lab serve) holds etcd and supervises flanneld; its
state is in <state-root>/<name>.

Binaries: flanneld and the CNI plugin "flannel" are taken from --bin-dir, else
from the directory of this flannelctl, else built with 'go build' into
<state-root>/<name>/bin when run inside the source tree. The reference plugins
come from --cni-bin-dir (scripts/install-cni-tools.sh installs them).`

const upExample = `  flannelctl lab up --name demo --nodes 3 --backend vxlan
  flannelctl lab up --name hg --nodes 4 --segments 2 --backend host-gw
  flannelctl lab up --name k1 --nodes 3 --kubernetes`

const checkHelp = `Pings every pod from every pod and every node from every pod, finds the MTU
boundary of each pod pair (largest DF ping payload that arrives) and compares it
with what FLANNEL_MTU promises (FLANNEL_MTU-28) and with the pods' own MTU, and
traces one cross-node pair hop by hop (route, neighbour, FDB). Exits 0 only
when everything matches; otherwise lists what failed and why.`

func upFlags(fs *flag.FlagSet, c *labCtx) {
	fs.IntVar(&c.spec.Nodes, "nodes", lab.DefaultNodes, "number of nodes")
	fs.StringVar(&c.spec.Backend, "backend", lab.DefaultBackend, "flannel backend: vxlan, host-gw, udp or wireguard (userspace where the kernel has no module)")
	fs.StringVar(&c.spec.Datapath, "datapath", "kernel", `kernel, or ebpf: net-conf.json Backend "Datapath": "ebpf", the eBPF fast path (host-gw and vxlan); lab check shows each pod's path`)
	fs.IntVar(&c.spec.PodsPerNode, "pods-per-node", lab.DefaultPodsPerNode, "pods created on each node through the flannel CNI plugin")
	fs.IntVar(&c.spec.Segments, "segments", 1, "1: one L2 underlay; 2: two segments joined by a router namespace")
	fs.IntVar(&c.spec.UnderlayMTU, "underlay-mtu", 1500, "MTU of the underlay links")
	fs.StringVar(&c.podMTU, "pod-mtu", "auto", "pod MTU: auto (FLANNEL_MTU) or a number, set as the CNI delegate's mtu")
	fs.StringVar(&c.binDir, "bin-dir", "", "directory with flanneld and flannel (default: next to flannelctl, else built with go build from the source tree)")
	fs.StringVar(&c.spec.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "directory with the reference CNI plugins bridge, host-local, portmap")
	fs.DurationVar(&c.spec.Timeout, "timeout", 0, "give up when the lab is not up within this time (default 5m)")
	fs.BoolVar(&c.kube, "kubernetes", false, "make the nodes Kubernetes nodes (control plane in the hub; containerd, kubelet, kube-proxy in each node) and install flannel with kubectl apply of the manifest")
	fs.StringVar(&c.kubeSpec.FlannelImage, "image-tar", "", "--kubernetes: the flannel image archive to import into every node (default bin/flannel-image.tar of the source tree, from scripts/image.sh)")
	fs.StringVar(&c.kubeSpec.ContainerdDir, "containerd-dir", "", "--kubernetes: directory with containerd, ctr and containerd-shim-runc-v2, 1.x or 2.x (default "+lab.DefaultContainerdDir+", from scripts/build-containerd.sh)")
	fs.StringVar(&c.kubeSpec.Manifest, "manifest", "", "--kubernetes: the manifest to apply (default deploy/kube-flannel.yml of the source tree)")
	fs.BoolVar(&c.kubeSpec.Helm, "helm", false, "--kubernetes: install flannel with helm install of the chart instead of kubectl apply of the manifest")
	fs.StringVar(&c.kubeSpec.Chart, "chart", "", "--kubernetes --helm: the chart (default deploy/chart/flannel of the source tree)")
	fs.BoolVar(&c.kubeSpec.NetworkPolicy, "network-policy", false, "--kubernetes: turn on flanneld --network-policy as the manifest's comments (or the chart's netpol.enabled) tell")
	fs.BoolVar(&c.kubeSpec.NFTables, "nftables", false, `--kubernetes: net-conf.json "EnableNFTables": true (nftables instead of iptables for flannel's rules)`)
	fs.BoolVar(&c.kubeSpec.DualStack, "dual-stack", false, "--kubernetes: IPv6 next to IPv4 (underlay, podCIDRs, Services, net-conf.json IPv6Network)")
}

func serveFlags(fs *flag.FlagSet, c *labCtx) {
	fs.StringVar(&c.stateDir, "state-dir", "", "the lab's state directory")
}

// dir is the state dir of the lab the command is about.
func (c *labCtx) dir() (string, error) {
	name, err := lab.Resolve(c.stateRoot, c.name)
	if err != nil {
		return "", err
	}
	return lab.StateDir(c.stateRoot, name), nil
}

func (c *labCtx) failed(err error) int {
	fmt.Fprintf(c.stderr, "flannelctl lab: %v\n", err)
	return 1
}

func labUp(ctx context.Context, c *labCtx) int {
	if len(c.args) > 0 {
		fmt.Fprintf(c.stderr, "flannelctl lab up: unexpected arguments %q\n", c.args)
		return 2
	}
	mtu, err := lab.ParsePodMTU(c.podMTU)
	if err != nil {
		fmt.Fprintf(c.stderr, "flannelctl lab up: %v\n", err)
		return 2
	}
	c.spec.PodMTU = mtu
	c.spec.Name = c.name
	if c.kube {
		c.spec.Kube = &c.kubeSpec
	} else if c.kubeSpec != (lab.KubeSpec{}) {
		fmt.Fprintln(c.stderr, "flannelctl lab up: --helm, --chart, --network-policy, --nftables, --dual-stack, --image-tar, --manifest and --containerd-dir need --kubernetes")
		return 2
	}
	if c.spec.Name == "" {
		c.spec.Name = lab.DefaultName
	}
	if err := c.spec.Validate(); err != nil {
		fmt.Fprintf(c.stderr, "flannelctl lab up: %v\n", err)
		return 2
	}
	// Before anything is built: a backend this kernel cannot run would
	// otherwise be found only once every node's flanneld fails.
	if err := lab.CheckBackend(c.spec.Backend); err != nil {
		fmt.Fprintf(c.stderr, "flannelctl lab up: %v\n", err)
		if errors.Is(err, lab.ErrUnknownBackend) {
			return 2
		}
		return 1
	}
	err = lab.Up(ctx, c.spec, lab.UpOptions{StateRoot: c.stateRoot, BinDir: c.binDir, Out: c.stdout, Verbosity: c.verbosity})
	if err != nil {
		return c.failed(err)
	}
	return 0
}

func labStatus(ctx context.Context, c *labCtx) int {
	dir, err := c.dir()
	if err != nil {
		return c.failed(err)
	}
	err = lab.Status(ctx, c.stdout, dir)
	switch {
	case errors.Is(err, lab.ErrDegraded):
		return 1
	case err != nil:
		return c.failed(err)
	}
	return 0
}

func labCheck(ctx context.Context, c *labCtx) int {
	dir, err := c.dir()
	if err != nil {
		return c.failed(err)
	}
	err = lab.Check(ctx, c.stdout, dir)
	switch {
	case errors.Is(err, lab.ErrCheckFailed):
		return 1
	case err != nil:
		return c.failed(err)
	}
	return 0
}

func labExec(ctx context.Context, c *labCtx) int {
	args := c.args
	if len(args) < 2 {
		fmt.Fprintln(c.stderr, "usage: flannelctl lab exec [--name N] POD|NAMESPACE/POD|NODE -- CMD [ARGS...]")
		return 2
	}
	target, argv := args[0], args[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	// The command's own interrupt handling decides; the lab tool waits.
	signal.Ignore(syscall.SIGINT)
	dir, err := c.dir()
	if err != nil {
		return c.failed(err)
	}
	code, err := lab.Exec(context.WithoutCancel(ctx), dir, target, argv)
	if err != nil {
		return c.failed(err)
	}
	return code
}

func labDoctor(ctx context.Context, c *labCtx) int {
	if len(c.args) < 1 {
		fmt.Fprintln(c.stderr, "usage: flannelctl lab doctor [--name N] NODE [DOCTOR FLAGS...]")
		return 2
	}
	dir, err := c.dir()
	if err != nil {
		return c.failed(err)
	}
	self, err := os.Executable()
	if err != nil {
		return c.failed(err)
	}
	argv, err := lab.DoctorArgv(dir, c.args[0], self, c.args[1:])
	if err != nil {
		return c.failed(err)
	}
	code, err := lab.Exec(context.WithoutCancel(ctx), dir, c.args[0], argv)
	if err != nil {
		return c.failed(err)
	}
	return code
}

func labDown(ctx context.Context, c *labCtx) int {
	name, err := lab.Resolve(c.stateRoot, c.name)
	if err != nil {
		return c.failed(err)
	}
	if err := lab.Down(context.WithoutCancel(ctx), c.stdout, name, lab.StateDir(c.stateRoot, name)); err != nil {
		return c.failed(err)
	}
	return 0
}

func labServe(ctx context.Context, c *labCtx) int {
	if c.stateDir == "" {
		fmt.Fprintln(c.stderr, "flannelctl lab serve is started by `flannelctl lab up`; it needs --state-dir")
		return 2
	}
	// Started by `lab up` with the progress pipe as fd 3; without it (run
	// by hand) progress goes to stdout.
	var progress io.Writer = c.stdout
	if f := os.NewFile(lab.ProgressFD, "progress"); f != nil {
		if _, err := f.Stat(); err == nil {
			progress = f
		}
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	if err := lab.Serve(ctx, c.stateDir, progress); err != nil {
		klog.Errorf("%v", err)
		return 1
	}
	return 0
}

func labKubectl(ctx context.Context, c *labCtx) int {
	args := c.args
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	dir, err := c.dir()
	if err != nil {
		return c.failed(err)
	}
	// kubectl handles interrupts itself (watch, exec); the lab tool waits.
	signal.Ignore(syscall.SIGINT)
	code, err := lab.Kubectl(context.WithoutCancel(ctx), dir, args)
	if err != nil {
		return c.failed(err)
	}
	return code
}

func labKubeconfig(ctx context.Context, c *labCtx) int {
	dir, err := c.dir()
	if err != nil {
		return c.failed(err)
	}
	path, err := lab.Kubeconfig(dir)
	if err != nil {
		return c.failed(err)
	}
	fmt.Fprintln(c.stdout, path)
	return 0
}
