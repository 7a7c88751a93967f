package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/atomicfile"
	"github.com/flannelgo/flannel/internal/subnet"
	etcdmgr "github.com/flannelgo/flannel/internal/subnet/etcd"
	kubemgr "github.com/flannelgo/flannel/internal/subnet/kube"
	"github.com/flannelgo/flannel/internal/subnet/storeflags"
	"github.com/flannelgo/flannel/internal/supportbundle"
	"github.com/flannelgo/flannel/internal/tools/doctor"
)

const doctorHelp = `Checks this node for the known flannel failure modes and prints one line per
check as it finishes (ok / PROBLEM / warning / SKIP) with, for each problem,
the evidence and the fix. A check that could not run (what it needs is
missing: the datastore, subnet.env, other nodes) says SKIP and why; it is not
counted as a problem, the check whose data is missing is.

Give it the datastore flags flanneld runs with. In kube mode the network
config is read from --net-config-path when that file exists on the node,
else from the ConfigMap --net-conf-configmap in the API.

--bundle FILE also writes a support archive (tar.gz) for a maintainer:
doctor's verdict, subnet.env, the network config and leases, flanneld's
command line and log, links, addresses, routes, neighbours, FDB, iptables and
nftables rules, WireGuard peers. PSKs, keys, passwords and tokens are
replaced by REDACTED.

Exits 0 when no check finds a PROBLEM (warnings and skips do not fail), 1
otherwise, 2 on bad usage. Run as root on the node (inside the node's
network namespace).`

const doctorExample = `  flannelctl doctor --etcd-endpoints=http://127.0.0.1:2379 --healthz=127.0.0.1:10244
  flannelctl doctor --kube-subnet-mgr --kubeconfig=/etc/kubernetes/admin.conf --node-name=$(hostname)
  flannelctl doctor --kube-subnet-mgr --kubeconfig=/etc/kubernetes/admin.conf --node-name=$(hostname) --bundle=/tmp/$(hostname)-flannel.tar.gz
  flannelctl doctor --output=json`

// doctorOpts are flanneld's datastore flags (its very definitions) plus
// doctor's own.
type doctorOpts struct {
	store                                 storeflags.Flags
	nodeName, subnetFile, healthz, output string
	bundle, configMap                     string
	timeout                               time.Duration
}

func doctorCommand() *cobra.Command {
	o := &doctorOpts{}
	cmd := &cobra.Command{
		Use:     "doctor",
		Short:   "Check this node for the known flannel failure modes",
		Long:    doctorHelp,
		Example: doctorExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "text" && o.output != "json" {
				return usagef("--output=%q: want text or json", o.output)
			}
			if _, _, ok := strings.Cut(o.configMap, "/"); !ok {
				return usagef("--net-conf-configmap=%q: want NAMESPACE/NAME", o.configMap)
			}
			return o.run(cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := flag.NewFlagSet("flannelctl doctor", flag.ContinueOnError)
	o.store.Register(fs)
	cmd.Flags().AddGoFlagSet(fs)
	kubeconfigFlag(cmd, &o.store.KubeconfigFile)
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's Kubernetes name (kube mode; default $NODE_NAME)")
	f.StringVar(&o.subnetFile, "subnet-file", "/run/flannel/subnet.env", "flanneld's --subnet-file")
	f.StringVar(&o.healthz, "healthz", "", "flanneld's health address IP:PORT (its --healthz-ip:--healthz-port); empty: only check that it runs")
	f.StringVar(&o.output, "output", "text", "text or json")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	f.StringVar(&o.bundle, "bundle", "", "also write a support archive (tar.gz, secrets redacted) to this file")
	f.StringVar(&o.configMap, "net-conf-configmap", "kube-flannel/kube-flannel-cfg", "kube mode: NAMESPACE/NAME of the ConfigMap holding net-conf.json, read when --net-config-path is not on this node")
	return cmd
}

// kubeconfigFlag gives cmd the one --kubeconfig flag every command has;
// --kubeconfig-file, flanneld's name, stays as a hidden alias.
func kubeconfigFlag(cmd *cobra.Command, target *string) {
	f := cmd.Flags()
	if f.Lookup("kubeconfig-file") == nil {
		f.StringVar(target, "kubeconfig-file", "", "kubeconfig file")
	}
	_ = f.MarkHidden("kubeconfig-file")
	f.StringVar(target, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
}

// restConfig is the client config: in-cluster when neither is given (in
// the flannel pod, without client-go's warning that it might not work).
func restConfig(apiURL, kubeconfig string) (*rest.Config, error) {
	if apiURL == "" && kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
}

// defaultKubeconfig fills an unset --kubeconfig as kubectl would:
// $KUBECONFIG (its first file), else ~/.kube/config when it exists; left
// empty, the in-cluster config is used.
func defaultKubeconfig(path string) string {
	if path != "" {
		return path
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return filepath.SplitList(env)[0]
	}
	if home, err := os.UserHomeDir(); err == nil {
		if p := filepath.Join(home, ".kube", "config"); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (o *doctorOpts) run(stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	in, closeStore, err := o.inputs(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "flannelctl doctor: %v\n", err)
		return exitCode(1)
	}
	defer closeStore()
	if o.output == "text" {
		in.Progress = func(r doctor.Result) { doctor.WriteResult(stdout, r) }
	}
	rs := doctor.Run(ctx, in)
	if o.output == "json" {
		_ = doctor.WriteJSON(stdout, rs)
	} else {
		doctor.WriteSummary(stdout, rs)
	}
	if o.bundle != "" {
		if err := writeBundle(ctx, o.bundle, in, rs); err != nil {
			fmt.Fprintf(stderr, "flannelctl doctor: %v\n", err)
			return exitCode(1)
		}
		fmt.Fprintf(stderr, "support bundle written to %s (secrets redacted)\n", o.bundle)
	}
	if doctor.Failed(rs) {
		return exitCode(1)
	}
	return nil
}

func writeBundle(ctx context.Context, path string, in doctor.Inputs, rs []doctor.Result) error {
	var buf bytes.Buffer
	dir := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".gz"), ".tar")
	items := doctor.BundleItems(ctx, in, rs, supportbundle.Exec)
	if err := supportbundle.Write(&buf, dir, items, time.Now()); err != nil {
		return err
	}
	// Private to root: even redacted, it maps the node's network.
	if err := atomicfile.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write support bundle %s: %w", path, err)
	}
	return nil
}

// inputs builds the datastore as flanneld would from the same flags.
func (o *doctorOpts) inputs(ctx context.Context) (doctor.Inputs, func(), error) {
	in := doctor.Inputs{SubnetFile: o.subnetFile, Healthz: o.healthz}
	if !o.store.KubeSubnetMgr {
		mgr, err := etcdmgr.New(o.store.Etcd())
		if err != nil {
			return in, nil, fmt.Errorf("etcd: %w", err)
		}
		in.Store = doctor.ManagerStore{Manager: subnet.Manager(mgr)}
		return in, func() { _ = mgr.Close() }, nil
	}
	o.store.KubeconfigFile = defaultKubeconfig(o.store.KubeconfigFile)
	rc, err := restConfig(o.store.KubeAPIURL, o.store.KubeconfigFile)
	if err != nil {
		return in, nil, fmt.Errorf("kubernetes client config (--kubeconfig %q): %w", o.store.KubeconfigFile, err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return in, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ko := o.store.Kube()
	ko.NodeName = o.nodeName
	cleanup := func() {}
	via := ""
	if _, err := os.Stat(ko.NetConfPath); errors.Is(err, os.ErrNotExist) {
		// Off the pod, net-conf.json is only in the API: the manager reads
		// a copy of the ConfigMap's.
		if ko.NetConfPath, cleanup, err = doctor.NetConfFromAPI(ctx, cs, o.configMap); err != nil {
			return in, nil, err
		}
		via = "net-conf.json from ConfigMap " + o.configMap
	}
	mgr, err := kubemgr.New(ko)
	if err != nil {
		cleanup()
		return in, nil, fmt.Errorf("kubernetes: %w", err)
	}
	in.Store = doctor.ManagerStore{Manager: mgr, Via: via}
	in.Kube = &doctor.KubeCheck{Client: cs, NodeName: o.nodeName}
	return in, cleanup, nil
}
