package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/netpol"
)

const explainHelp = `Prints whether a new connection from one pod to another is allowed by the
cluster's NetworkPolicies and ClusterNetworkPolicies, and which tier,
policy and rule decide it, from the
same compiler flanneld --network-policy enforces with. Either side may be an
IP address instead of a pod. Without :PORT/PROTO every container port the
destination pod declares is explained. Exits 0 after explaining (ALLOW or
DENY alike), 1 when the cluster cannot be read, 2 on bad usage.`

func policyCommand() *cobra.Command {
	group := &cobra.Command{
		Use:     "policy",
		Short:   "Explain NetworkPolicy decisions as flanneld --network-policy makes them, and show the packets it dropped",
		Example: "  flannelctl policy explain --from default/client --to default/server:80/TCP\n  flannelctl policy drops --all-nodes --namespace prod --follow",
		Args:    noArgs,
		RunE:    needSubcommand,
	}
	group.AddCommand(explainCommand(), dropsCommand())
	return group
}

func explainCommand() *cobra.Command {
	var from, to, kubeconfig string
	cmd := &cobra.Command{
		Use:   "explain --from NS/POD --to NS/POD[:PORT/PROTO] [--kubeconfig FILE]",
		Short: "Say whether a connection between two pods is allowed, and by which rules",
		Long:  explainHelp,
		Example: `  flannelctl policy explain --from default/client --to default/server:80/TCP
  flannelctl policy explain --from 10.244.1.5 --to prod/db --kubeconfig ~/.kube/prod.conf`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return usagef("both --from and --to are needed")
			}
			if _, _, err := netpol.ParseTarget(to); err != nil {
				return usageError{err}
			}
			if err := explain(from, to, kubeconfig, cmd.OutOrStdout()); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "flannelctl policy explain: %v\n", err)
				return exitCode(1)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source: NAMESPACE/POD or an IP address")
	cmd.Flags().StringVar(&to, "to", "", "destination: NAMESPACE/POD or an IP address, optionally :PORT/PROTO (80/TCP)")
	kubeconfigFlag(cmd, &kubeconfig)
	return cmd
}

func explain(from, to, kubeconfig string, out io.Writer) error {
	target, ports, err := netpol.ParseTarget(to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, rc, err := kubeClient(kubeconfig)
	if err != nil {
		return err
	}
	in, err := netpol.ListInput(ctx, cs.CoreV1().RESTClient(), cs.NetworkingV1().RESTClient())
	if err != nil {
		return err
	}
	if err := netpol.ListClusterInput(ctx, rc, &in); err != nil {
		return err
	}
	return netpol.Explain(in, from, target, ports, out)
}

func kubeClient(kubeconfig string) (kubernetes.Interface, *rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client config (--kubeconfig %q): %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("kubernetes client for %s", rc.Host), err)
	}
	return cs, rc, nil
}
