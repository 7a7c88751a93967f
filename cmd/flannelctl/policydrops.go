package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/droplog"
)

const dropsHelp = `Shows the packets NetworkPolicy dropped, as flanneld --network-policy
records them (its /policy/drops endpoint, on --metrics-address or else the
healthz port): time, node, direction, source and destination pod (or
address), protocol and port, and the policies isolating the pod. The kernel
logs a sample (at most --policy-drop-log-rate packets per second and
direction per node); the exact counts are flannel_policy_dropped_packets_total.
--node and --all-nodes ask each node's flanneld at its InternalIP and the
port of --address. Exits 1 when a flanneld cannot be read, 2 on bad usage.`

type dropsFlags struct {
	address, nodes, namespace, kubeconfig, output string
	allNodes, follow                              bool
}

func dropsCommand() *cobra.Command {
	var f dropsFlags
	cmd := &cobra.Command{
		Use:   "drops [--node N[,N...] | --all-nodes] [--namespace NS] [--follow] [--output text|json]",
		Short: "Show the packets NetworkPolicy dropped (a sample, from flanneld's drop log)",
		Long:  dropsHelp,
		Example: `  flannelctl policy drops
  flannelctl policy drops --all-nodes --namespace prod --follow
  flannelctl policy drops --node n1,n2 --output json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "text" && f.output != "json" {
				return usagef("--output %q: text or json", f.output)
			}
			if f.allNodes && f.nodes != "" {
				return usagef("--node and --all-nodes exclude each other")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := showDrops(ctx, f, cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "flannelctl policy drops: %v\n", err)
				return exitCode(1)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.address, "address", "127.0.0.1:8081", "flanneld's metrics or healthz address (the node's own flanneld by default)")
	fs.StringVar(&f.nodes, "node", "", "ask these nodes' flanneld (comma-separated Node names; kube mode)")
	fs.BoolVar(&f.allNodes, "all-nodes", false, "ask every node's flanneld (kube mode)")
	fs.StringVar(&f.namespace, "namespace", "", "only drops with a pod of this namespace on either side")
	fs.BoolVar(&f.follow, "follow", false, "keep printing new drops until interrupted")
	fs.StringVar(&f.output, "output", "text", "text or json (one JSON object per line)")
	kubeconfigFlag(cmd, &f.kubeconfig)
	return cmd
}

func showDrops(ctx context.Context, f dropsFlags, stdout, stderr io.Writer) error {
	addrs, err := dropAddresses(ctx, f)
	if err != nil {
		return err
	}
	q := url.Values{}
	if f.namespace != "" {
		q.Set("namespace", f.namespace)
	}
	if f.follow {
		q.Set("follow", "1")
	}
	var mu sync.Mutex
	var all []droplog.Record
	print := func(r droplog.Record) {
		mu.Lock()
		defer mu.Unlock()
		if f.follow {
			printDrop(stdout, f.output, r)
			return
		}
		all = append(all, r)
	}
	rate, err := fetchAll(ctx, addrs, q, print)
	if err != nil {
		return err
	}
	slices.SortStableFunc(all, func(a, b droplog.Record) int { return a.Time.Compare(b.Time) })
	for _, r := range all {
		printDrop(stdout, f.output, r)
	}
	fmt.Fprintf(stderr, "note: records are a sample (the kernel logs at most %s packets per second and direction per node); exact counts: flannel_policy_dropped_packets_total\n", rate)
	return nil
}

// fetchAll reads every address's records at once and returns the sampling
// rate the nodes reported.
func fetchAll(ctx context.Context, addrs []string, q url.Values, each func(droplog.Record)) (string, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(addrs))
	rates := make([]string, len(addrs))
	for i, a := range addrs {
		wg.Go(func() { rates[i], errs[i] = fetchDrops(ctx, a, q, each) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return "", err
		}
	}
	return strings.Join(slices.Compact(slices.Sorted(slices.Values(rates))), "/"), nil
}

func fetchDrops(ctx context.Context, addr string, q url.Values, each func(droplog.Record)) (string, error) {
	u := "http://" + addr + droplog.Path + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w (is flanneld running with --network-policy and --healthz-port or --metrics-address there? pass --address)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s (flanneld serves the drop log with --network-policy and --policy-drop-log-group > 0)", u, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r droplog.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return "", fmt.Errorf("GET %s: bad record %q: %w", u, sc.Text(), err)
		}
		each(r)
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	return resp.Header.Get(droplog.RateHeader), nil
}

func printDrop(w io.Writer, output string, r droplog.Record) {
	if output == "json" {
		json.NewEncoder(w).Encode(r)
		return
	}
	port := r.Proto
	if r.Port != 0 {
		port = fmt.Sprintf("%d/%s", r.Port, r.Proto)
	}
	fmt.Fprintf(w, "%s %s %s %s -> %s %s policies=%s\n", r.Time.Format(time.RFC3339Nano), r.Node, r.Direction,
		r.Source, r.Dest, port, strings.Join(r.Policies, ","))
}

// dropAddresses is --address, or each chosen node's InternalIP with its port.
func dropAddresses(ctx context.Context, f dropsFlags) ([]string, error) {
	if f.nodes == "" && !f.allNodes {
		return []string{f.address}, nil
	}
	_, port, err := net.SplitHostPort(f.address)
	if err != nil {
		return nil, fmt.Errorf("--address %q: %w", f.address, err)
	}
	cs, _, err := kubeClient(f.kubeconfig)
	if err != nil {
		return nil, err
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	want := strings.Split(f.nodes, ",")
	var out []string
	for _, n := range list.Items {
		if !f.allNodes && !slices.Contains(want, n.Name) {
			continue
		}
		ip := internalIP(n)
		if ip == "" {
			return nil, fmt.Errorf("node %s has no InternalIP address", n.Name)
		}
		out = append(out, net.JoinHostPort(ip, port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no node named %s", f.nodes)
	}
	return out, nil
}

func internalIP(n corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}
