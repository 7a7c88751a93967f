package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannelgo/flannel/internal/netpol"
)

const policyUsage = `usage:
  flannelctl policy explain --from NS/POD --to NS/POD[:PORT/PROTO] [--kubeconfig FILE]

Prints whether a new connection from one pod to another is allowed by the
cluster's NetworkPolicies and ClusterNetworkPolicies, and which tier,
policy and rule decide it, from the
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
	target, ports, err := parseTarget(to)
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
	src, _, err := endpoint(in, from)
	if err != nil {
		return err
	}
	dst, dstPod, err := endpoint(in, target)
	if err != nil {
		return err
	}
	if len(ports) == 0 {
		if ports = declaredPorts(dstPod); len(ports) == 0 {
			return fmt.Errorf("%s declares no container ports: give the port as %s:PORT/PROTO", target, target)
		}
	}
	m := netpol.Compile(in, nil)
	for _, p := range ports {
		fmt.Fprint(out, m.Decide(src, dst, p.Proto, p.From).Explain(from, fmt.Sprintf("%s:%d/%s", target, p.From, p.Proto)))
	}
	return nil
}

// parseTarget splits NS/POD[:PORT/PROTO].
func parseTarget(s string) (string, []netpol.PortRange, error) {
	target, port, ok := strings.Cut(s, ":")
	if !ok || strings.Count(s, ":") > 1 && !strings.Contains(s, "/") {
		return s, nil, nil // no port, or a bare IPv6 address
	}
	num, proto, _ := strings.Cut(port, "/")
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		return "", nil, fmt.Errorf("port %q in %q: want PORT/PROTO such as 80/TCP", port, s)
	}
	p := netpol.Proto(strings.ToUpper(proto))
	switch p {
	case "":
		p = netpol.TCP
	case netpol.TCP, netpol.UDP, netpol.SCTP:
	default:
		return "", nil, fmt.Errorf("protocol %q in %q: want TCP, UDP or SCTP", proto, s)
	}
	return target, []netpol.PortRange{{Proto: p, From: uint16(n), To: uint16(n)}}, nil
}

// endpoint finds the address of a pod (its first) or takes an address.
func endpoint(in netpol.Input, s string) (netip.Addr, *corev1.Pod, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Addr{}, nil, fmt.Errorf("%q: want NAMESPACE/POD or an IP address", s)
	}
	for _, p := range in.Pods {
		if p.Namespace != ns || p.Name != name {
			continue
		}
		if p.Spec.HostNetwork {
			return netip.Addr{}, nil, fmt.Errorf("pod %s uses the host network: NetworkPolicy does not apply to it; give the node's address instead", s)
		}
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			return a, p, nil
		}
		return netip.Addr{}, nil, fmt.Errorf("pod %s has no address yet (status.podIP is empty)", s)
	}
	return netip.Addr{}, nil, fmt.Errorf("pod %s not found", s)
}

func declaredPorts(p *corev1.Pod) []netpol.PortRange {
	if p == nil {
		return nil
	}
	var out []netpol.PortRange
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			proto := netpol.Proto(cp.Protocol)
			if proto == "" {
				proto = netpol.TCP
			}
			out = append(out, netpol.PortRange{Proto: proto, From: uint16(cp.ContainerPort), To: uint16(cp.ContainerPort)})
		}
	}
	return out
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
