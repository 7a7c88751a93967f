package lab

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// routeControlPlaneToPods gives the hub, where the control plane runs, a
// route to each node's podCIDRs via that node, as a control-plane node of
// a real cluster reaches pods through its own flannel: the API server
// dials pods for `kubectl port-forward`-less proxying (pods/proxy,
// services/proxy), which Kubernetes' Proxy conformance specs use. The
// node forwards to its cni0 bridge; the pod's reply is masqueraded to the
// node's address like any traffic leaving the cluster network.
func (kl *kubeLab) routeControlPlaneToPods(ctx context.Context) error {
	cs, err := kl.api.AdminClient()
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes for the control plane's routes to pods: %w", err)
	}
	byName := map[string]*kubeNode{}
	for _, n := range kl.nodes {
		byName[n.Name] = n
	}
	return testbed.WithHandle(kl.tb.Hub.NS, func(h *netlink.Handle) error {
		for _, kn := range nodes.Items {
			n := byName[kn.Name]
			if n == nil {
				continue
			}
			for _, c := range kn.Spec.PodCIDRs {
				if err := hubRoute(h, n, c); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func hubRoute(h *netlink.Handle, n *kubeNode, cidr string) error {
	_, dst, err := net.ParseCIDR(cidr)
	if err != nil {
		return fmt.Errorf("node %s: podCIDR %q: %w", n.Name, cidr, err)
	}
	gw := n.Addr
	if dst.IP.To4() == nil {
		gw = n.Addr6
	}
	if !gw.IsValid() {
		return fmt.Errorf("node %s has podCIDR %s but no underlay address of its family", n.Name, dst)
	}
	if err := h.RouteReplace(&netlink.Route{Dst: dst, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("hub: ip route replace %s via %s: %w", dst, gw, err)
	}
	return nil
}
