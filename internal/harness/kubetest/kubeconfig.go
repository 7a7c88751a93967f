package kubetest

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/flannelgo/flannel/internal/ctxwait"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a one-cluster, one-user kubeconfig.
func writeKubeconfig(path, server, caFile string, user *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos["user"] = user
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "user"}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

func writeCertKubeconfig(path, server string, p *pki) error {
	return writeKubeconfig(path, server, p.CAFile, &clientcmdapi.AuthInfo{
		ClientCertificate: p.AdminCert, ClientKey: p.AdminKey,
	})
}

// WriteTokenKubeconfig writes a kubeconfig for this server that
// authenticates with a bearer token.
func (s *Server) WriteTokenKubeconfig(path, token string) error {
	return writeKubeconfig(path, s.URL, s.CAFile, &clientcmdapi.AuthInfo{Token: token})
}

// ServiceAccountToken mints a token for namespace/name through the
// TokenRequest API, as the kubelet does for a pod's projected token.
func (s *Server) ServiceAccountToken(ctx context.Context, namespace, name string, ttl time.Duration) (string, error) {
	cs, err := s.AdminClient()
	if err != nil {
		return "", err
	}
	secs := int64(ttl.Seconds())
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for serviceaccount %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ServiceAccountKubeconfig creates (or reuses) namespace and ServiceAccount
// namespace/name, a ClusterRole of the same name holding exactly rules,
// bound to the ServiceAccount, then mints a token and writes a kubeconfig
// with it into the state dir. It returns once the API server's authorizer
// allows the first rule, so the caller can use the identity at once.
func (s *Server) ServiceAccountKubeconfig(ctx context.Context, namespace, name string, rules []rbacv1.PolicyRule) (string, error) {
	cs, err := s.AdminClient()
	if err != nil {
		return "", err
	}
	if err := ensureIdentity(ctx, cs, namespace, name, rules); err != nil {
		return "", err
	}
	if len(rules) > 0 {
		if err := waitAllowed(ctx, cs, namespace, name, rules[0]); err != nil {
			return "", err
		}
	}
	token, err := s.ServiceAccountToken(ctx, namespace, name, time.Hour)
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.Dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	if err := s.WriteTokenKubeconfig(path, token); err != nil {
		return "", err
	}
	return path, nil
}

// clusterRoleName keeps roles of same-named accounts in different
// namespaces apart.
func clusterRoleName(namespace, name string) string { return "kubetest:" + namespace + ":" + name }

func ensureIdentity(ctx context.Context, cs kubernetes.Interface, namespace, name string, rules []rbacv1.PolicyRule) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("create serviceaccount %s/%s: %w", namespace, name, err)
	}
	role := clusterRoleName(namespace, name)
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = cs.RbacV1().ClusterRoles().Update(ctx, cr, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("update clusterrole %s: %w", role, err)
		}
	} else if err != nil {
		return fmt.Errorf("create clusterrole %s: %w", role, err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("create clusterrolebinding %s: %w", role, err)
	}
	return nil
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// waitAllowed waits until RBAC grants the ServiceAccount rule's first verb
// on its first resource: the authorizer learns of new bindings through an
// informer, a few milliseconds after they are written.
func waitAllowed(ctx context.Context, cs kubernetes.Interface, namespace, name string, rule rbacv1.PolicyRule) error {
	if len(rule.Verbs) == 0 || len(rule.Resources) == 0 {
		return nil
	}
	group := ""
	if len(rule.APIGroups) > 0 {
		group = rule.APIGroups[0]
	}
	return WaitAuthorized(ctx, cs, namespace, name, authzv1.ResourceAttributes{
		Verb: rule.Verbs[0], Group: group, Resource: rule.Resources[0],
	})
}

// WaitAuthorized waits, up to 30 s, until the authorizer allows
// ServiceAccount namespace/name what attrs describes: it learns of new
// bindings through an informer, moments after they are written.
func WaitAuthorized(ctx context.Context, cs kubernetes.Interface, namespace, name string, attrs authzv1.ResourceAttributes) error {
	user := "system:serviceaccount:" + namespace + ":" + name
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		ResourceAttributes: &attrs,
	}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err == nil && res.Status.Allowed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("RBAC did not grant %s %q on %q within 30s (error %v)", user, attrs.Verb, attrs.Resource+"/"+attrs.Subresource, err)
		}
		if err := ctxwait.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}
