package etcd

import (
	"context"
	"fmt"
	"time"

	"github.com/flannelgo/flannel/internal/ctxwait"
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

// grantMarker grants the etcd lease a new marker hangs on.
func (m *Manager) grantMarker(ctx context.Context, cli *clientv3.Client) (clientv3.LeaseID, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	g, err := cli.Grant(rctx, aliveTTL)
	if err != nil {
		return 0, m.etcdErr("grant a liveness lease", err)
	}
	return g.ID, nil
}

// startAlive keeps the marker written with the lease (on etcd lease id)
// alive in the background until ctx ends, re-creating it after an outage.
func (m *Manager) startAlive(ctx context.Context, leaseName string, id clientv3.LeaseID) {
	m.markers.Add(1)
	go func() {
		defer m.markers.Done()
		cli, err := m.client()
		if err == nil {
			err = m.keepMarker(ctx, cli, id)
		}
		if err != nil && ctx.Err() == nil {
			klog.V(1).Infof("liveness marker for %s: %v (re-creating)", leaseName, err)
		}
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
		if err := ctxwait.Sleep(ctx, 2*time.Second); err != nil {
			return
		}
	}
}

func (m *Manager) holdAliveOnce(ctx context.Context, leaseName string) error {
	cli, err := m.client()
	if err != nil {
		return err
	}
	id, err := m.grantMarker(ctx, cli)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	_, err = cli.Put(rctx, m.aliveKey(leaseName), "", clientv3.WithLease(id))
	cancel()
	if err != nil {
		m.revoke(ctx, cli, id)
		return fmt.Errorf("put: %w", err)
	}
	return m.keepMarker(ctx, cli, id)
}

// keepMarker refreshes etcd lease id until ctx ends or etcd lets it lapse,
// then revokes it so that a restart of this node finds its lease free.
func (m *Manager) keepMarker(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID) error {
	defer m.revoke(context.WithoutCancel(ctx), cli, id)
	ch, err := cli.KeepAlive(ctx, id)
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	for range ch {
	}
	return fmt.Errorf("keepalive of etcd lease %x ended", id)
}
