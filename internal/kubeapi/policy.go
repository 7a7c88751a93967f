package kubeapi

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	cnpv1 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// ClusterPolicy is a client of policy.networking.k8s.io/v1alpha2
// (ClusterNetworkPolicy, a CRD: JSON only, CRDs have no protobuf).
func ClusterPolicy(base *rest.Config) (*Client, error) {
	scheme := runtime.NewScheme()
	if err := cnpv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register %s types: %w", cnpv1.SchemeGroupVersion, err)
	}
	cfg := rest.CopyConfig(base)
	cfg.APIPath = "/apis"
	gv := cnpv1.SchemeGroupVersion
	cfg.GroupVersion = &gv
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes %s client for %s: %w", gv, cfg.Host, err)
	}
	return &Client{REST: rc, Params: runtime.NewParameterCodec(scheme)}, nil
}
