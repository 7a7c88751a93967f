package netpol

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	cnpv1 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/flannelgo/flannel/internal/kubeapi"
)

// clusterListers read the caches of ClusterNetworkPolicies and Nodes
// (for their egress node peers), once the CRD is there.
type clusterListers struct {
	policies cache.Indexer
	nodes    listerscorev1.NodeLister
}

// followClusterPolicies waits for the ClusterNetworkPolicy CRD (a cluster
// without it has the feature off, said once), then follows the policies
// and the nodes and triggers a sync. A CRD installed later is picked up
// within CRDPoll.
func (c *Controller) followClusterPolicies(ctx context.Context) {
	said := false
	for {
		err := c.cnpAPI.Get().Resource("clusternetworkpolicies").Param("limit", "1").Do(ctx).Error()
		if err == nil {
			break
		}
		switch {
		case ctx.Err() != nil:
			return
		case apierrors.IsNotFound(err) && !said:
			klog.Infof("network policy: no ClusterNetworkPolicy CRD (%s): cluster network policies are off until it is installed", cnpv1.SchemeGroupVersion)
			said = true
		case apierrors.IsForbidden(err) && !said:
			klog.Errorf("network policy: listing clusternetworkpolicies is forbidden (%v): grant flannel's ClusterRole list and watch on clusternetworkpolicies.policy.networking.k8s.io; cluster network policies are off until then", err)
			said = true
		case !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err):
			klog.V(2).Infof("network policy: looking for the ClusterNetworkPolicy CRD: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.opts.CRDPoll):
		}
	}
	if err := c.startClusterInformers(ctx); err != nil {
		klog.Errorf("network policy: %v; cluster network policies are not enforced", err)
		return
	}
	klog.Infof("network policy: following clusternetworkpolicies (%s) and nodes", cnpv1.SchemeGroupVersion)
	c.changed()
}

func (c *Controller) startClusterInformers(ctx context.Context) error {
	pols := c.newInformer(c.cnpAPI, "clusternetworkpolicies", &cnpv1.ClusterNetworkPolicy{})
	nodes := c.newInformer(c.core, "nodes", &corev1.Node{})
	go pols.Run(ctx.Done())
	go nodes.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pols.HasSynced, nodes.HasSynced) {
		return fmt.Errorf("caches of clusternetworkpolicies and nodes not filled: %w", ctx.Err())
	}
	c.cluster.Store(&clusterListers{policies: pols.GetIndexer(), nodes: listerscorev1.NewNodeLister(nodes.GetIndexer())})
	return nil
}

// clusterInput adds the cluster policies and nodes to in, when followed.
func (c *Controller) clusterInput(in *Input) error {
	l := c.cluster.Load()
	if l == nil {
		return nil
	}
	for _, o := range l.policies.List() {
		if p, ok := o.(*cnpv1.ClusterNetworkPolicy); ok {
			in.ClusterPolicies = append(in.ClusterPolicies, p)
		}
	}
	var err error
	if in.Nodes, err = l.nodes.List(labels.Everything()); err != nil {
		return fmt.Errorf("list nodes from cache: %w", err)
	}
	return nil
}

// stripCluster keeps of nodes their labels and addresses, of policies
// what the compiler reads.
func stripCluster(obj any) any {
	switch o := obj.(type) {
	case *corev1.Node:
		n := &corev1.Node{}
		n.Name, n.Labels, n.ResourceVersion, n.UID = o.Name, o.Labels, o.ResourceVersion, o.UID
		n.Status.Addresses = o.Status.Addresses
		return n
	case *cnpv1.ClusterNetworkPolicy:
		o.ManagedFields, o.Annotations, o.Status = nil, nil, cnpv1.ClusterNetworkPolicyStatus{}
		return o
	}
	return obj
}

func clusterWithoutVersion(obj any) any {
	switch o := obj.(type) {
	case *corev1.Node:
		c := *o
		c.ResourceVersion = ""
		return &c
	case *cnpv1.ClusterNetworkPolicy:
		c := *o
		c.ResourceVersion, c.Generation = "", 0
		return &c
	}
	return obj
}

// ListClusterInput adds the ClusterNetworkPolicies and the nodes to in,
// read straight from the API server (flannelctl policy explain); a
// cluster without the CRD has none.
func ListClusterInput(ctx context.Context, cfg *rest.Config, in *Input) error {
	api, err := kubeapi.ClusterPolicy(cfg)
	if err != nil {
		return err
	}
	pols := &cnpv1.ClusterNetworkPolicyList{}
	err = api.REST.Get().Resource("clusternetworkpolicies").Do(ctx).Into(pols)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list clusternetworkpolicies: %w", err)
	}
	core, err := kubeapi.Core(cfg)
	if err != nil {
		return err
	}
	nodes := &corev1.NodeList{}
	if err := core.REST.Get().Resource("nodes").Do(ctx).Into(nodes); err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for i := range pols.Items {
		in.ClusterPolicies = append(in.ClusterPolicies, &pols.Items[i])
	}
	for i := range nodes.Items {
		in.Nodes = append(in.Nodes, &nodes.Items[i])
	}
	return nil
}
