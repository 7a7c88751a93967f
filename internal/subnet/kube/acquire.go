package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/pace"
)

// remindEvery repeats the "pod cidr not assigned" message while waiting,
// so it stays visible in a log tail.
const remindEvery = time.Minute

// watchTimeout makes the API server end a node watch now and then, so a
// silently dead connection is noticed and replaced.
const watchTimeout = 5 * time.Minute

// AcquireLease waits until the node has a pod CIDR, checks it against the
// network, and publishes attrs in the node's annotations. The subnet is the
// pod CIDR: Kubernetes, not flannel, allocates it.
func (m *Manager) AcquireLease(ctx context.Context, attrs *lease.Attrs) (*lease.Lease, error) {
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		return nil, err
	}
	name, err := m.resolveNodeName(ctx)
	if err != nil {
		return nil, err
	}
	node, err := m.waitPodCIDR(ctx, name, cfg)
	if err != nil {
		return nil, err
	}
	v4, v6, err := leaseSubnets(node, cfg)
	if err != nil {
		return nil, err
	}
	pub, err := m.keys.overwrite(node, *attrs)
	if err != nil {
		return nil, err
	}
	if pub.PublicIP != attrs.PublicIP || pub.PublicIPv6 != attrs.PublicIPv6 {
		klog.Infof("node %q: advertising public address %v/%v from its overwrite annotation instead of %v/%v",
			name, pub.PublicIP, pub.PublicIPv6, attrs.PublicIP, attrs.PublicIPv6)
	}
	want := m.keys.desired(pub, cfg)
	if err := m.patchAnnotations(ctx, name, changes(node.Annotations, want)); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.published = want
	m.mu.Unlock()
	return &lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: pub, Expiration: time.Now().Add(leaseLifetime)}, nil
}

// patchAnnotations sends a JSON merge patch; a nil value deletes the key.
func (m *Manager) patchAnnotations(ctx context.Context, name string, ann map[string]*string) error {
	if len(ann) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return fmt.Errorf("encode annotations for node %q: %w", name, err)
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// Through the status subresource, as upstream does: its ClusterRole
	// grants "patch" on nodes/status only, and that subresource keeps
	// metadata changes (it resets only the spec).
	if err := m.api.patchNode(rctx, name, types.MergePatchType, body, "status"); err != nil {
		return apiError("patch", "nodes/status", name, err)
	}
	return nil
}

// waitPodCIDR returns the node once it has a pod CIDR. Until then it
// watches the node rather than failing, since a node often registers
// before kube-controller-manager assigns its range.
func (m *Manager) waitPodCIDR(ctx context.Context, name string, cfg *config.Config) (*corev1.Node, error) {
	var lastLog time.Time
	waiting := func(node *corev1.Node) {
		if time.Since(lastLog) < remindEvery {
			return
		}
		lastLog = time.Now()
		if node == nil {
			klog.Warningf("node %q not found; waiting for the kubelet to register it", name)
			return
		}
		klog.Warningf("node %q pod cidr not assigned: the cluster must allocate pod CIDRs (kube-controller-manager --allocate-node-cidrs=true --cluster-cidr=%s, or kubeadm init --pod-network-cidr=%s); waiting",
			name, networks(cfg), networks(cfg))
	}
	for {
		node, rv, err := m.getNode(ctx, name)
		if err != nil {
			return nil, err
		}
		if node != nil && assigned(node) {
			return node, nil
		}
		waiting(node)
		node, err = m.watchUntilAssigned(ctx, name, rv, waiting)
		if err != nil {
			return nil, err
		}
		if node != nil {
			return node, nil
		}
		// The watch ended without news (timeout, or it fell behind):
		// start over from a fresh read.
	}
}

// getNode returns the node (nil if it does not exist yet) and the resource
// version to watch from.
func (m *Manager) getNode(ctx context.Context, name string) (*corev1.Node, string, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	node, err := m.api.getNode(rctx, name)
	if err == nil {
		return node, node.ResourceVersion, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, "", apiError("get", "nodes", name, err)
	}
	// Watch from the list's version so a node created right after our
	// read is not missed.
	list, err := m.api.listNodes(rctx, metav1.ListOptions{FieldSelector: nameSelector(name)})
	if err != nil {
		return nil, "", apiError("list", "nodes", "", err)
	}
	return nil, list.ResourceVersion, nil
}

func nameSelector(name string) string {
	return fields.OneTermEqualSelector("metadata.name", name).String()
}

// watchUntilAssigned follows the node from rv. It returns the node once it
// has a pod CIDR, or nil when the watch ends and the caller should re-read.
func (m *Manager) watchUntilAssigned(ctx context.Context, name, rv string, waiting func(*corev1.Node)) (*corev1.Node, error) {
	secs := int64(watchTimeout.Seconds())
	w, err := m.api.watchNodes(ctx, metav1.ListOptions{
		FieldSelector: nameSelector(name), ResourceVersion: rv, TimeoutSeconds: &secs,
		AllowWatchBookmarks: true,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, apiError("watch", "nodes", name, err)
	}
	defer w.Stop()
	remind := pace.NewTicker(remindEvery, 0)
	defer remind.Stop()
	var last *corev1.Node
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-remind.C():
			waiting(last)
			remind.Next()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				node, isNode := ev.Object.(*corev1.Node)
				if !isNode {
					continue
				}
				if assigned(node) {
					return node, nil
				}
				last = node
			case watch.Deleted:
				last = nil
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				if apierrors.IsForbidden(err) {
					return nil, apiError("watch", "nodes", name, err)
				}
				klog.V(1).Infof("watch of node %q: %v; re-reading it", name, err)
				return nil, nil
			}
		}
	}
}

// assigned says whether the node has any pod CIDR; whether it is usable is
// leaseSubnets' question, answered with an error rather than more waiting.
func assigned(node *corev1.Node) bool {
	return len(node.Spec.PodCIDRs) > 0 || node.Spec.PodCIDR != ""
}

func networks(cfg *config.Config) string {
	switch {
	case cfg.EnableIPv4 && cfg.EnableIPv6:
		return cfg.Network.String() + "," + cfg.IPv6Network.String()
	case cfg.EnableIPv6:
		return cfg.IPv6Network.String()
	}
	return cfg.Network.String()
}

// MarkReady sets the node's NetworkUnavailable condition to False when
// --set-node-network-unavailable is on; the daemon calls it once routes to
// the peers are programmed. Without the flag it does nothing.
func (m *Manager) MarkReady(ctx context.Context) error {
	if !m.opts.SetNodeNetworkUnavailable {
		klog.V(2).Info("not setting condition NetworkUnavailable: --set-node-network-unavailable=false")
		return nil
	}
	name, err := m.resolveNodeName(ctx)
	if err != nil {
		return err
	}
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "FlannelIsUp", Message: "Flannel is running on this node",
		LastTransitionTime: now, LastHeartbeatTime: now,
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return fmt.Errorf("encode node condition: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// Conditions merge by type in a strategic merge patch, so the kubelet's
	// own conditions stay untouched.
	err = m.api.patchNode(rctx, name, types.StrategicMergePatchType, body, "status")
	if err != nil {
		return apiError("patch", "nodes/status", name, err)
	}
	klog.Infof("node %q: set condition NetworkUnavailable=False", name)
	return nil
}

// StoredBackend returns what this node published in its last run: the
// backend-type annotation and the backend-data and backend-v6-data values
// (nil where absent). After a reboot they survive in the Node object while
// the devices are gone; upstream reads the VXLAN MAC from them. A node that
// cannot be read yet has nothing stored.
func (m *Manager) StoredBackend(ctx context.Context) (typ string, v4, v6 json.RawMessage) {
	name, err := m.resolveNodeName(ctx)
	if err != nil {
		klog.Warningf("cannot read this node's backend annotations yet: %v", err)
		return "", nil, nil
	}
	node, _, err := m.getNode(ctx, name)
	if err != nil || node == nil {
		klog.Warningf("cannot read the backend annotations of node %q (%v); the backend starts afresh", name, err)
		return "", nil, nil
	}
	return m.keys.storedBackend(node)
}

// StoredPublicIP returns the addresses in the node's node-public-ip and
// node-public-ipv6 annotations (invalid where unset). Upstream reads them at
// start-up, and they replace --public-ip and --public-ipv6, also for
// choosing the interface. A node that cannot be read yet (not registered)
// has none, as upstream treats it; only a malformed annotation is an error.
func (m *Manager) StoredPublicIP(ctx context.Context) (v4, v6 netip.Addr, err error) {
	name, err := m.resolveNodeName(ctx)
	if err != nil {
		klog.Warningf("cannot read the node-public-ip annotations yet: %v", err)
		return v4, v6, nil
	}
	node, _, err := m.getNode(ctx, name)
	if err != nil || node == nil {
		klog.Warningf("cannot read the node-public-ip annotations of node %q yet (%v); using --public-ip and --public-ipv6", name, err)
		return v4, v6, nil
	}
	return m.keys.nodePublic(node)
}
