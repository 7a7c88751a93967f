package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/doctor"
	"github.com/flannelgo/flannel/internal/subnet"
	etcdmgr "github.com/flannelgo/flannel/internal/subnet/etcd"
	kubemgr "github.com/flannelgo/flannel/internal/subnet/kube"
)

const doctorHelp = `Checks this node for the known flannel failure modes and prints one line per
check (ok / PROBLEM / warning) with, for each problem, the evidence and the fix.
Give it the datastore flags flanneld runs with. Exits 0 when no check finds a
PROBLEM (warnings do not fail), 1 otherwise, 2 on bad usage. Run as root on the
node (inside the node's network namespace).`

// doctorOpts are flanneld's datastore flags plus doctor's own.
type doctorOpts struct {
	etcdEndpoints, etcdPrefix, etcdKeyfile, etcdCertfile, etcdCAFile string
	etcdUsername, etcdPassword                                       string
	kubeSubnetMgr                                                    bool
	kubeAPIURL, kubeconfigFile, kubeAnnotationPrefix, netConfigPath  string
	nodeName, subnetFile, healthz, output                            string
	timeout                                                          time.Duration
}

func doctorFlags(stderr io.Writer) (*flag.FlagSet, *doctorOpts) {
	o := &doctorOpts{}
	fs := flag.NewFlagSet("flannelctl doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.etcdEndpoints, "etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379", "a comma-delimited list of etcd endpoints (as flanneld's)")
	fs.StringVar(&o.etcdPrefix, "etcd-prefix", "/coreos.com/network", "etcd prefix")
	fs.StringVar(&o.etcdKeyfile, "etcd-keyfile", "", "SSL key file for etcd")
	fs.StringVar(&o.etcdCertfile, "etcd-certfile", "", "SSL certificate file for etcd")
	fs.StringVar(&o.etcdCAFile, "etcd-cafile", "", "SSL CA file for etcd")
	fs.StringVar(&o.etcdUsername, "etcd-username", "", "etcd BasicAuth username")
	fs.StringVar(&o.etcdPassword, "etcd-password", "", "etcd BasicAuth password")
	fs.BoolVar(&o.kubeSubnetMgr, "kube-subnet-mgr", false, "read leases from the Kubernetes API (as flanneld --kube-subnet-mgr)")
	fs.StringVar(&o.kubeAPIURL, "kube-api-url", "", "Kubernetes API server URL")
	fs.StringVar(&o.kubeconfigFile, "kubeconfig-file", "", "kubeconfig file")
	fs.StringVar(&o.kubeAnnotationPrefix, "kube-annotation-prefix", "flannel.alpha.coreos.com", "Kubernetes annotation prefix")
	fs.StringVar(&o.netConfigPath, "net-config-path", "/etc/kube-flannel/net-conf.json", "network config file (kube mode)")
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
	if !o.kubeSubnetMgr {
		mgr, err := etcdmgr.New(etcdmgr.Options{
			Endpoints: strings.Split(o.etcdEndpoints, ","), Prefix: o.etcdPrefix,
			KeyFile: o.etcdKeyfile, CertFile: o.etcdCertfile, CAFile: o.etcdCAFile,
			Username: o.etcdUsername, Password: o.etcdPassword,
		})
		if err != nil {
			return in, nil, fmt.Errorf("etcd: %w", err)
		}
		in.Store = doctor.ManagerStore{Manager: subnet.Manager(mgr)}
		return in, func() { _ = mgr.Close() }, nil
	}
	mgr, err := kubemgr.New(kubemgr.Options{APIURL: o.kubeAPIURL, Kubeconfig: o.kubeconfigFile,
		AnnotationPrefix: o.kubeAnnotationPrefix, NetConfPath: o.netConfigPath, NodeName: o.nodeName})
	if err != nil {
		return in, nil, fmt.Errorf("kubernetes: %w", err)
	}
	in.Store = doctor.ManagerStore{Manager: mgr}
	rc, err := clientcmd.BuildConfigFromFlags(o.kubeAPIURL, o.kubeconfigFile)
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
