package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// readyWithin bounds each stage of the wait for a settled lab.
const readyWithin = time.Minute

// tunnelDevice names the device through which backend routes the whole
// Network, choosing the peer inside the device (udp's peer table,
// WireGuard's AllowedIPs), or "" for a backend that installs one kernel
// route per peer subnet.
func tunnelDevice(backend string) string {
	switch backend {
	case "udp":
		return "flannel0"
	case "wireguard":
		return "flannel-wg"
	}
	return ""
}

// waitReady waits until the lab carries traffic between nodes, so that
// `lab check` right after `lab up` tests a settled lab. A backend with a
// route per peer is settled when the routes are there; one that routes
// the Network into its own device shows no per-peer kernel state, so
// its lab is settled when pods (or, without pods, the nodes' tunnel
// addresses) answer pings across every pair of nodes.
func (r *running) waitReady(ctx context.Context) error {
	dev := tunnelDevice(r.spec.Backend)
	if dev == "" {
		return r.waitRoutes(ctx)
	}
	envs := map[*testbed.Node]*subnetenv.Env{}
	for _, n := range r.tb.Nodes {
		env, err := subnetenv.Read(n.SubnetFile)
		if err != nil {
			return err
		}
		envs[n] = env
	}
	if err := r.waitNetworkRoutes(ctx, dev, envs); err != nil {
		return err
	}
	return r.waitCrossPings(ctx, dev, envs)
}

// waitNetworkRoutes waits for `<Network> dev <dev>` on every node.
func (r *running) waitNetworkRoutes(ctx context.Context, dev string, envs map[*testbed.Node]*subnetenv.Env) error {
	deadline := time.Now().Add(readyWithin)
	for {
		var missing []string
		for _, n := range r.tb.Nodes {
			ok, err := hasRoute(n.NS, envs[n].Network.Masked(), dev)
			if err != nil {
				return err
			}
			if !ok {
				missing = append(missing, fmt.Sprintf("%s lacks `%s dev %s`", n.Name, envs[n].Network.Masked(), dev))
			}
		}
		if len(missing) == 0 {
			r.rep.say("routes: every node routes the network %s into %s", envs[r.tb.Nodes[0]].Network.Masked(), dev)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("routes still missing after %s: %s; see the nodes' flanneld.log", readyWithin, strings.Join(missing, "; "))
		}
		if err := ctxwait.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// hasRoute says whether ns routes dst into dev; a device that does not
// exist yet is a route that is not there yet.
func hasRoute(ns string, dst netip.Prefix, dev string) (bool, error) {
	found := false
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		routes, err := k.Routes("", unix.AF_INET)
		for _, rt := range routes {
			found = found || (rt.Dst == dst && rt.Dev == dev)
		}
		return err
	})
	return found, err
}

// probeEnd is one side of a cross-node probe: the node's first pod, or
// the node itself and its tunnel address when it has no pod.
type probeEnd struct {
	name, ns string
	addr     netip.Addr
}

func endOf(n *testbed.Node, env *subnetenv.Env) probeEnd {
	if len(n.Pods) > 0 {
		p := n.Pods[0]
		return probeEnd{name: p.Name, ns: p.NS, addr: p.IP}
	}
	return probeEnd{name: n.Name + " " + tunnelAddrLabel, ns: n.NS, addr: env.Subnet.Masked().Addr()}
}

const tunnelAddrLabel = "(tunnel address)"

// waitCrossPings pings from every node's probe end to every other node's,
// all pairs at once, each retried until it answers or readyWithin ends.
func (r *running) waitCrossPings(ctx context.Context, dev string, envs map[*testbed.Node]*subnetenv.Env) error {
	type probe struct{ src, dst probeEnd }
	var probes []probe
	for _, n := range r.tb.Nodes {
		for _, m := range r.tb.Nodes {
			if n != m {
				probes = append(probes, probe{endOf(n, envs[n]), endOf(m, envs[m])})
			}
		}
	}
	if len(probes) == 0 {
		return nil
	}
	var mu sync.Mutex
	var failed []string
	parallelDo(len(probes), func(i int) {
		p := probes[i]
		if err := testbed.PingWithin(ctx, p.src.ns, p.dst.addr, 56, false, readyWithin); err != nil {
			mu.Lock()
			failed = append(failed, fmt.Sprintf("%s -> %s (%s)", p.src.name, p.dst.name, p.dst.addr))
			mu.Unlock()
		}
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d cross-node pings through %s got no reply within %s: %s; see the nodes' flanneld.log",
			len(failed), len(probes), dev, readyWithin, strings.Join(failed, ", "))
	}
	r.rep.say("data path: all %d cross-node pairs answer pings through %s", len(probes), dev)
	return nil
}
