package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// With --ip-masq a pod talking to a host outside the cluster is seen with
// its node's address, and a pod talking to another pod with its own.
func TestIPMasq(t *testing.T) {
	c := newCluster(t, "msq", clusterOpts{nodes: 2})
	c.start(c.Nodes, "--ip-masq")
	pods := c.addPods(c.Nodes)
	ctx := testCtx(t, time.Minute)
	out, err := c.AddOutside(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkMasq(t, ctx, pods, out.NS, out.Addr)
}

// checkMasq asserts the source addresses seen by an outside host and by
// another pod, for a connection from pods[0].
func checkMasq(t *testing.T, ctx context.Context, pods []*testbed.Pod, outNS string, outAddr netip.Addr) {
	t.Helper()
	from := pods[0]
	if got, err := sourceSeen(ctx, from.NS, outNS, outAddr); err != nil {
		t.Errorf("pod %s -> outside %s: %v", from.Name, outAddr, err)
	} else if got != from.Node.Addr {
		t.Errorf("outside host saw pod %s as %s, want its node's address %s", from.Name, got, from.Node.Addr)
	}
	to := pods[1]
	if got, err := sourceSeen(ctx, from.NS, to.NS, to.IP); err != nil {
		t.Errorf("pod %s -> pod %s: %v", from.Name, to.Name, err)
	} else if got != from.IP {
		t.Errorf("pod %s saw pod %s as %s, want the pod's own address %s (pod-to-pod must not be masqueraded)", to.Name, from.Name, got, from.IP)
	}
}

// sourceSeen opens a TCP connection from namespace fromNS to a listener in
// toNS at addr and returns the source address the listener saw.
func sourceSeen(ctx context.Context, fromNS, toNS string, addr netip.Addr) (netip.Addr, error) {
	var ln net.Listener
	err := testbed.InNamespace(toNS, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listen in %s: %w", toNS, err)
	}
	defer ln.Close()
	seen := make(chan netip.Addr, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(seen)
			return
		}
		defer conn.Close()
		seen <- conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	}()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := testbed.DialInNamespace(dctx, fromNS, "tcp", ln.Addr().String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	select {
	case a, ok := <-seen:
		if !ok {
			return netip.Addr{}, fmt.Errorf("accept failed")
		}
		return a, nil
	case <-dctx.Done():
		return netip.Addr{}, dctx.Err()
	}
}
