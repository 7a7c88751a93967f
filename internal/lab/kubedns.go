package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// coreDNSImage is the image of kubeadm v1.37 (scripts/build-kube-images.sh
// builds it from github.com/coredns/coredns).
const (
	coreDNSImage   = "registry.k8s.io/coredns/coredns:v1.14.6"
	coreDNSArchive = "coredns-v1.14.6.tar"
)

// coreDNSManifest is cluster DNS as kubeadm deploys it (ServiceAccount,
// RBAC, Corefile, two replicas, the kube-dns Service at the address
// kubelets give pods), without the forward plugin: the lab has no way
// out, and names outside cluster.local must fail fast, not time out.
const coreDNSManifest = `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health {
           lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
           pods insecure
           fallthrough in-addr.arpa ip6.arpa
           ttl 30
        }
        prometheus :9153
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 2
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      priorityClassName: system-cluster-critical
      serviceAccountName: coredns
      tolerations:
      - {key: CriticalAddonsOnly, operator: Exists}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector:
                matchLabels: {k8s-app: kube-dns}
              topologyKey: kubernetes.io/hostname
      containers:
      - name: coredns
        image: %s
        imagePullPolicy: IfNotPresent
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {containerPort: 53, name: dns, protocol: UDP}
        - {containerPort: 53, name: dns-tcp, protocol: TCP}
        - {containerPort: 9153, name: metrics, protocol: TCP}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
          readOnlyRootFilesystem: true
        volumeMounts:
        - {name: config-volume, mountPath: /etc/coredns, readOnly: true}
      dnsPolicy: Default
      volumes:
      - name: config-volume
        configMap:
          name: coredns
          items: [{key: Corefile, path: Corefile}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: %s
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: metrics, port: 9153, protocol: TCP}
`

// installDNS deploys CoreDNS when its image was built (scripts/setup.sh
// does): pods then resolve Services by name, as in a kubeadm cluster.
func (kl *kubeLab) installDNS(ctx context.Context) error {
	if !exists(filepath.Join(kl.k.ImageDir, coreDNSArchive)) {
		kl.rep.say("no CoreDNS image in %s: no cluster DNS (scripts/build-kube-images.sh builds it)", kl.k.ImageDir)
		return nil
	}
	path := filepath.Join(kubeDir(kl.spec.StateDir), "coredns.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, coreDNSManifest, coreDNSImage, kubeDNSAddr), 0o644); err != nil {
		return err
	}
	if err := kl.kubectl(ctx, "apply", "-f", path); err != nil {
		return err
	}
	kl.rep.say("CoreDNS (%s) deployed, Service kube-system/kube-dns %s", coreDNSImage, kubeDNSAddr)
	return nil
}
