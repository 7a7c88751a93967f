package kube

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/flannelgo/flannel/internal/kubeapi"
)

// coreClient is the slice of the Kubernetes API flanneld uses: nodes, and
// the pod it runs in, all in core/v1. It is built by internal/kubeapi
// rather than from a clientset, which would link the types, clients and
// scheme registrations of every API group into flanneld (see kubeapi).
type coreClient struct {
	rc     *rest.RESTClient
	params runtime.ParameterCodec
}

func newCoreClient(base *rest.Config) (*coreClient, error) {
	c, err := kubeapi.Core(base)
	if err != nil {
		return nil, err
	}
	return &coreClient{rc: c.REST, params: c.Params}, nil
}

func (c *coreClient) getNode(ctx context.Context, name string) (*corev1.Node, error) {
	node := &corev1.Node{}
	err := c.rc.Get().Resource("nodes").Name(name).Do(ctx).Into(node)
	if err != nil {
		return nil, err
	}
	return node, nil
}

func (c *coreClient) listNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	list := &corev1.NodeList{}
	err := c.rc.Get().Resource("nodes").VersionedParams(&opts, c.params).Timeout(timeoutOf(opts)).Do(ctx).Into(list)
	if err != nil {
		return nil, err
	}
	return list, nil
}

func (c *coreClient) watchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rc.Get().Resource("nodes").VersionedParams(&opts, c.params).Timeout(timeoutOf(opts)).Watch(ctx)
}

// patchNode patches the node, or one of its subresources ("status").
func (c *coreClient) patchNode(ctx context.Context, name string, pt types.PatchType, body []byte, subresource string) error {
	req := c.rc.Patch(pt).Resource("nodes").Name(name).Body(body)
	if subresource != "" {
		req = req.SubResource(subresource)
	}
	return req.Do(ctx).Error()
}

func (c *coreClient) getPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := c.rc.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(pod)
	if err != nil {
		return nil, err
	}
	return pod, nil
}

// timeoutOf is the request timeout a list or watch asks the server for,
// also applied on the client side, as the generated clients do.
func timeoutOf(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}
