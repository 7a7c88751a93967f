package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/netpol"
)

const policyUsage = `usage:
  flannelctl policy explain --from NS/POD --to NS/POD[:PORT/PROTO] [--kubeconfig FILE]

Prints whether a new connection from one pod to another is allowed by the
cluster's NetworkPolicies, and which policies and rules decide it, from the
same compiler flanneld --network-policy enforces with. Either side may be an
IP address instead of a pod. Without :PORT/PROTO every container port the
destination pod declares is explained.
`

func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "explain" {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	fs := flag.NewFlagSet("flannelctl policy explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "source: NAMESPACE/POD or an IP address")
	to := fs.String("to", "", "destination: NAMESPACE/POD or an IP address, optionally :PORT/PROTO (80/TCP)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	if err := explain(*from, *to, *kubeconfig, stdout); err != nil {
		fmt.Fprintf(stderr, "flannelctl policy explain: %v\n", err)
		return 1
	}
	return 0
}

func explain(from, to, kubeconfig string, out io.Writer) error {
	target, ports, err := netpol.ParseTarget(to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := kubeClient(kubeconfig)
	if err != nil {
		return err
	}
	in, err := netpol.ListInput(ctx, cs.CoreV1().RESTClient(), cs.NetworkingV1().RESTClient())
	if err != nil {
		return err
	}
	return netpol.Explain(in, from, target, ports, out)
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config (--kubeconfig %q): %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("kubernetes client for %s", rc.Host), err)
	}
	return cs, nil
}
