package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelgo/flannel/internal/config"
)

// KubeCheck holds what the Kubernetes checks need: a client with the
// credentials flanneld uses, and this node's name.
type KubeCheck struct {
	Client   kubernetes.Interface
	NodeName string
}

// rbacNeeds is what flanneld calls on the API (deploy/kube-flannel.yml's
// ClusterRole grants exactly these).
var rbacNeeds = []authv1.ResourceAttributes{
	{Verb: "get", Resource: "nodes"},
	{Verb: "list", Resource: "nodes"},
	{Verb: "watch", Resource: "nodes"},
	{Verb: "patch", Resource: "nodes", Subresource: "status"},
}

// check: the node has a podCIDR, it lies inside Network, and the
// credentials may do what flanneld does.
func (k *KubeCheck) check(ctx context.Context, cfg *config.Config) Result {
	const name = "kube node"
	denied := k.rbac(ctx)
	fixRBAC := "apply deploy/kube-flannel.yml's ClusterRole and ClusterRoleBinding (nodes: get, list, watch; nodes/status: patch) for flanneld's service account"
	if k.NodeName == "" {
		return problem(name, "node name unknown", "set NODE_NAME (the DaemonSet sets it from spec.nodeName) or pass --node-name")
	}
	node, err := k.Client.CoreV1().Nodes().Get(ctx, k.NodeName, metav1.GetOptions{})
	if err != nil {
		return problem(name, "cannot read node "+k.NodeName, fixRBAC+"; check --kubeconfig", append(denied, err.Error())...)
	}
	if len(denied) > 0 {
		return problem(name, "flanneld's credentials lack permissions it needs", fixRBAC, denied...)
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return problem(name, fmt.Sprintf("node %s pod cidr not assigned", k.NodeName),
			"start kube-controller-manager with --allocate-node-cidrs=true --cluster-cidr=<Network> (kubeadm: --pod-network-cidr), or set spec.podCIDR on the node")
	}
	ev := []string{"spec.podCIDRs " + strings.Join(cidrs, ",")}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return problem(name, "node "+k.NodeName+" has an unparsable podCIDR "+c, "fix spec.podCIDR", ev...)
		}
		if cfg == nil {
			continue // not compared: no network config (see datastore)
		}
		net := cfg.Network
		if p.Addr().Is6() {
			net = cfg.IPv6Network
		}
		if net.IsValid() && (!net.Contains(p.Addr()) || p.Bits() < net.Bits()) {
			return problem(name, fmt.Sprintf("node %s's podCIDR %s is outside the flannel Network %s", k.NodeName, p, net),
				"make kube-controller-manager's --cluster-cidr equal to net-conf.json's Network (or change Network), then re-create the node's podCIDR", ev...)
		}
	}
	return ok(name, fmt.Sprintf("node %s has podCIDR %s inside the Network; RBAC sufficient", k.NodeName, strings.Join(cidrs, ",")), ev...)
}

// rbac asks the API server which of flanneld's calls would be denied.
func (k *KubeCheck) rbac(ctx context.Context) []string {
	var denied []string
	for _, ra := range rbacNeeds {
		ra := ra
		r, err := k.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		what := ra.Verb + " " + ra.Resource
		if ra.Subresource != "" {
			what += "/" + ra.Subresource
		}
		switch {
		case err != nil:
			denied = append(denied, "cannot ask whether "+what+" is allowed: "+err.Error())
		case !r.Status.Allowed:
			denied = append(denied, "not allowed: "+what)
		}
	}
	return denied
}

// NetConfFromAPI copies net-conf.json of the ConfigMap ref (NAMESPACE/NAME)
// to a private temporary file for the subnet manager to read, as the pod
// reads its mount of it: doctor run on the node itself has no such file.
// done removes the copy.
func NetConfFromAPI(ctx context.Context, client kubernetes.Interface, ref string) (path string, done func(), err error) {
	ns, name, _ := strings.Cut(ref, "/")
	cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("failed to read net conf: ConfigMap %s: %w (no --net-config-path file on this node either; give --net-conf-configmap NAMESPACE/NAME)", ref, err)
	}
	data, ok := cm.Data["net-conf.json"]
	if !ok {
		return "", nil, fmt.Errorf("failed to read net conf: ConfigMap %s has no net-conf.json key", ref)
	}
	dir, err := os.MkdirTemp("", "flannelctl-doctor-")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "net-conf.json")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return path, func() { os.RemoveAll(dir) }, nil
}
