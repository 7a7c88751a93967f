package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/subnet"
	etcdmgr "github.com/flannelgo/flannel/internal/subnet/etcd"
	kubemgr "github.com/flannelgo/flannel/internal/subnet/kube"
	"github.com/flannelgo/flannel/internal/subnet/storeflags"
	"github.com/flannelgo/flannel/internal/tools/doctor"
)

const doctorHelp = `Checks this node for the known flannel failure modes and prints one line per
check (ok / PROBLEM / warning) with, for each problem, the evidence and the fix.
Give it the datastore flags flanneld runs with. Exits 0 when no check finds a
PROBLEM (warnings do not fail), 1 otherwise, 2 on bad usage. Run as root on the
node (inside the node's network namespace).`

// doctorOpts are flanneld's datastore flags (its very definitions) plus
// doctor's own.
type doctorOpts struct {
	store                                 storeflags.Flags
	nodeName, subnetFile, healthz, output string
	timeout                               time.Duration
}

func doctorFlags(stderr io.Writer) (*flag.FlagSet, *doctorOpts) {
	o := &doctorOpts{}
	fs := flag.NewFlagSet("flannelctl doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.store.Register(fs)
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's Kubernetes name (kube mode; default $NODE_NAME)")
	fs.StringVar(&o.subnetFile, "subnet-file", "/run/flannel/subnet.env", "flanneld's --subnet-file")
	fs.StringVar(&o.healthz, "healthz", "", "flanneld's health address IP:PORT (its --healthz-ip:--healthz-port); empty: only check that it runs")
	fs.StringVar(&o.output, "output", "text", "text or json")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: flannelctl doctor [flags]\n\n%s\n\nflags:\n", doctorHelp)
		fs.PrintDefaults()
	}
	return fs, o
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	fs, o := doctorFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || (o.output != "text" && o.output != "json") {
		fmt.Fprintf(stderr, "flannelctl doctor: unexpected arguments %q or --output=%q (text|json)\n", fs.Args(), o.output)
		return 2
	}
	in, closeStore, err := o.inputs()
	if err != nil {
		fmt.Fprintf(stderr, "flannelctl doctor: %v\n", err)
		return 1
	}
	defer closeStore()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rs := doctor.Run(ctx, in)
	if o.output == "json" {
		_ = doctor.WriteJSON(stdout, rs)
	} else {
		doctor.WriteText(stdout, rs)
	}
	if doctor.Failed(rs) {
		return 1
	}
	return 0
}

// inputs builds the datastore as flanneld would from the same flags.
func (o *doctorOpts) inputs() (doctor.Inputs, func(), error) {
	in := doctor.Inputs{SubnetFile: o.subnetFile, Healthz: o.healthz}
	if !o.store.KubeSubnetMgr {
		mgr, err := etcdmgr.New(o.store.Etcd())
		if err != nil {
			return in, nil, fmt.Errorf("etcd: %w", err)
		}
		in.Store = doctor.ManagerStore{Manager: subnet.Manager(mgr)}
		return in, func() { _ = mgr.Close() }, nil
	}
	ko := o.store.Kube()
	ko.NodeName = o.nodeName
	mgr, err := kubemgr.New(ko)
	if err != nil {
		return in, nil, fmt.Errorf("kubernetes: %w", err)
	}
	in.Store = doctor.ManagerStore{Manager: mgr}
	rc, err := clientcmd.BuildConfigFromFlags(o.store.KubeAPIURL, o.store.KubeconfigFile)
	if err != nil {
		return in, nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return in, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	in.Kube = &doctor.KubeCheck{Client: cs, NodeName: o.nodeName}
	return in, func() {}, nil
}
