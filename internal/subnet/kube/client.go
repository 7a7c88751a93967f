package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// coreClient is the slice of the Kubernetes API flanneld uses: nodes, and
// the pod it runs in, all in core/v1. A clientset (k8s.io/client-go/
// kubernetes) and its informer factory would link the types, clients and
// scheme registrations of every API group into flanneld, and their
// initialisation touches all of it at start-up: measured, about 20 MiB of
// resident memory on every node, also in etcd mode (scripts/scale.sh).
type coreClient struct {
	rc     *rest.RESTClient
	params runtime.ParameterCodec
}

// protobuf is how the API server sends nodes: a third of the size of JSON
// and cheaper to decode, which matters for the initial list of a large
// cluster. JSON stays acceptable for servers or proxies without it.
const (
	protobuf       = "application/vnd.kubernetes.protobuf"
	acceptProtobuf = protobuf + ",application/json"
)

func newCoreClient(base *rest.Config) (*coreClient, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core/v1 types: %w", err)
	}
	cfg := rest.CopyConfig(base)
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	cfg.ContentType, cfg.AcceptContentTypes = protobuf, acceptProtobuf
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	return &coreClient{rc: rc, params: runtime.NewParameterCodec(scheme)}, nil
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
