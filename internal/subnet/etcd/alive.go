package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flannelgo/flannel/internal/pace"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// Upstream knows a node only by its public address, so a second node with
// the same address (every Vagrant VM's NAT NIC is 10.0.2.15) silently takes
// over the first one's subnet. A running flanneld therefore also holds a
// short-lived marker next to its lease; upstream never reads this key. A
// lease with our address whose marker is alive belongs to another running
// node, unless subnet.env says it was ours (a quick restart).
//
// The marker is best-effort: an etcd role made for upstream grants only
// <prefix>/config and <prefix>/subnets/, and flanneld must work under it.
// The first refusal (permission denied) turns the marker off for the life
// of the Manager; from then on flanneld uses exactly upstream's keys and,
// like upstream, takes a lease with its own address as its own.
const aliveTTL = 30 // seconds

func (m *Manager) alivePrefix() string              { return m.opts.Prefix + "/flannel-go/alive/" }
func (m *Manager) aliveKey(leaseName string) string { return m.alivePrefix() + leaseName }

// markersOff reports whether etcd refused the markers, so none is used.
func (m *Manager) markersOff() bool { return m.noMarkers.Load() }

// refusedMarker turns the markers off if err is etcd refusing them and
// reports whether it was; the first refusal is logged.
func (m *Manager) refusedMarker(err error) bool {
	if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		return false
	}
	if m.noMarkers.CompareAndSwap(false, true) {
		klog.Warningf("etcd at %s refuses the liveness markers under %s (%v): running with upstream's keys only. "+
			"Like upstream, this node now takes any lease that advertises its public address as its own, even one of another running node "+
			"with the same address; to keep that protection, grant this etcd user read-write on the prefix %s",
			m.endpoints(), m.alivePrefix(), err, m.alivePrefix())
	}
	return true
}

// isAlive reports whether the holder of leaseName is running now. Without
// markers nobody is known to be: upstream's rule.
func (m *Manager) isAlive(ctx context.Context, cli *clientv3.Client, leaseName string) (bool, error) {
	if m.markersOff() {
		return false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := cli.Get(rctx, m.aliveKey(leaseName), clientv3.WithCountOnly())
	if m.refusedMarker(err) {
		return false, nil
	}
	if err != nil {
		return false, m.etcdErr("read "+m.aliveKey(leaseName), err)
	}
	return resp.Count > 0, nil
}

// grantMarker grants the etcd lease a new marker hangs on; 0 means no
// marker (etcd refused them).
func (m *Manager) grantMarker(ctx context.Context, cli *clientv3.Client) (clientv3.LeaseID, error) {
	if m.markersOff() {
		return 0, nil
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	g, err := cli.Grant(rctx, aliveTTL)
	if m.refusedMarker(err) {
		return 0, nil
	}
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
	// A marker kept alive for a minute was healthy: its loss starts the
	// back-off afresh.
	b := pace.New(pace.Policy{Min: 2 * time.Second, Max: 30 * time.Second, Jitter: 0.2, Stable: time.Minute})
	for ctx.Err() == nil && !m.markersOff() {
		started := time.Now()
		if err := m.holdAliveOnce(ctx, leaseName); err != nil && ctx.Err() == nil {
			klog.V(1).Infof("liveness marker for %s: %v (retrying)", leaseName, err)
		}
		b.Settled(time.Since(started))
		if err := b.Sleep(ctx); err != nil {
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
		if m.refusedMarker(err) {
			return nil
		}
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
