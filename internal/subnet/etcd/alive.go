package etcd

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// Upstream knows a node only by its public address, so a second node with
// the same address (every Vagrant VM's NAT NIC is 10.0.2.15) silently takes
// over the first one's subnet. A running flanneld therefore also holds a
// short-lived marker next to its lease; upstream never reads this key. A
// lease with our address whose marker is alive belongs to another running
// node, unless subnet.env says it was ours (a quick restart).
const aliveTTL = 30 // seconds

func (m *Manager) alivePrefix() string              { return m.opts.Prefix + "/flannel-go/alive/" }
func (m *Manager) aliveKey(leaseName string) string { return m.alivePrefix() + leaseName }

// isAlive reports whether the holder of leaseName is running now.
func (m *Manager) isAlive(ctx context.Context, cli *clientv3.Client, leaseName string) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := cli.Get(rctx, m.aliveKey(leaseName), clientv3.WithCountOnly())
	if err != nil {
		return false, m.etcdErr("read "+m.aliveKey(leaseName), err)
	}
	return resp.Count > 0, nil
}

// startAlive runs holdAlive in the background until ctx ends.
func (m *Manager) startAlive(ctx context.Context, leaseName string) {
	m.markers.Add(1)
	go func() {
		defer m.markers.Done()
		m.holdAlive(ctx, leaseName)
	}()
}

// waitMarkers gives the marker loops up to d to revoke their markers after
// their context ended.
func (m *Manager) waitMarkers(d time.Duration) {
	done := make(chan struct{})
	go func() { m.markers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// holdAlive keeps the marker of leaseName while ctx lives, re-creating it
// after an etcd outage. On return it revokes the marker so that a restart
// of this node finds its lease free to reuse.
func (m *Manager) holdAlive(ctx context.Context, leaseName string) {
	for ctx.Err() == nil {
		if err := m.holdAliveOnce(ctx, leaseName); err != nil && ctx.Err() == nil {
			klog.V(1).Infof("liveness marker for %s: %v (retrying)", leaseName, err)
		}
		if err := sleep(ctx, 2*time.Second); err != nil {
			return
		}
	}
}

func (m *Manager) holdAliveOnce(ctx context.Context, leaseName string) error {
	cli, err := m.client()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	g, err := cli.Grant(rctx, aliveTTL)
	cancel()
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = cli.Revoke(rctx, g.ID)
	}()
	rctx, cancel = context.WithTimeout(ctx, requestTimeout)
	_, err = cli.Put(rctx, m.aliveKey(leaseName), "", clientv3.WithLease(g.ID))
	cancel()
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	ch, err := cli.KeepAlive(ctx, g.ID)
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	for range ch {
	}
	return fmt.Errorf("keepalive of etcd lease %x ended", g.ID)
}
