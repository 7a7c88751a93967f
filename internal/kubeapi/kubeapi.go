// Package kubeapi builds REST clients for the two API groups flanneld
// talks to, core/v1 and networking/v1, over a scheme that holds only
// those.
//
// The clientset (k8s.io/client-go/kubernetes) and even its typed group
// clients import k8s.io/client-go/kubernetes/scheme, which links the types
// of every API group (56 packages) into the binary and registers them all
// at start-up. flanneld pays for that on every node, also in etcd mode: in
// binary size, and so in resident memory (the binary's pages are part of
// RSS). See docs/SCALE.md.
package kubeapi

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// protobuf is how the API server sends built-in objects: a third of the
// size of JSON and cheaper to decode, which matters for the initial list
// of a large cluster. JSON stays acceptable for servers or proxies without
// it.
const (
	protobuf       = "application/vnd.kubernetes.protobuf"
	acceptProtobuf = protobuf + ",application/json"
)

// Client is a REST client for one API group version, with the codec its
// list and watch options are encoded with.
type Client struct {
	REST   *rest.RESTClient
	Params runtime.ParameterCodec
}

// Core is a client for core/v1 (nodes, pods, namespaces).
func Core(base *rest.Config) (*Client, error) {
	return newClient(base, "/api", corev1.SchemeGroupVersion)
}

// Networking is a client for networking.k8s.io/v1 (network policies).
func Networking(base *rest.Config) (*Client, error) {
	return newClient(base, "/apis", networkingv1.SchemeGroupVersion)
}

// newScheme holds core/v1 and networking/v1, and with them the meta types
// (list options, watch events) each group registers.
func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core/v1 types: %w", err)
	}
	if err := networkingv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register networking/v1 types: %w", err)
	}
	return scheme, nil
}

func newClient(base *rest.Config, apiPath string, gv schema.GroupVersion) (*Client, error) {
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(base)
	cfg.APIPath = apiPath
	cfg.GroupVersion = &gv
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	cfg.ContentType, cfg.AcceptContentTypes = protobuf, acceptProtobuf
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes %s client for %s: %w", gv, cfg.Host, err)
	}
	return &Client{REST: rc, Params: runtime.NewParameterCodec(scheme)}, nil
}
