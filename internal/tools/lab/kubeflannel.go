package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelgo/flannel/deploy"
	"github.com/flannelgo/flannel/internal/ctxwait"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// The DaemonSet deploy/kube-flannel.yml creates.
const (
	flannelNamespace = "kube-flannel"
	flannelDaemonSet = "kube-flannel-ds"
)

// importImages loads the images into every node's containerd (the CRI's
// k8s.io namespace): nothing is pulled, no registry is reachable.
func (kl *kubeLab) importImages(ctx context.Context) error {
	archives := []string{kl.k.FlannelImage}
	for _, img := range KubeImages() {
		p := filepath.Join(kl.k.ImageDir, img)
		if !exists(p) {
			kl.rep.say("WARNING: no %s (scripts/build-kube-images.sh builds it): pods that use it will not start", p)
			continue
		}
		archives = append(archives, p)
	}
	start := time.Now()
	errs := make(chan error, len(kl.nodes))
	for _, n := range kl.nodes {
		go func() { errs <- kl.importInto(ctx, n, archives) }()
	}
	for range kl.nodes {
		if err := <-errs; err != nil {
			return err
		}
	}
	kl.rep.say("images imported into every node's containerd: %s (%.1fs)", baseNames(archives), time.Since(start).Seconds())
	return nil
}

func (kl *kubeLab) importInto(ctx context.Context, n *kubeNode, archives []string) error {
	for _, a := range archives {
		cmd := exec.CommandContext(ctx, filepath.Join(kl.k.ContainerdDir, "ctr"),
			"--address", n.socket(), "--namespace", "k8s.io", "images", "import", a)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("node %s: ctr images import %s: %w: %s", n.Name, a, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func baseNames(paths []string) string {
	var b []string
	for _, p := range paths {
		b = append(b, filepath.Base(p))
	}
	return strings.Join(b, ", ")
}

var (
	imageLine   = regexp.MustCompile(`(?m)^(\s*-?\s*image:\s*)\S+\s*$`)
	backendType = regexp.MustCompile(`("Type":\s*)"vxlan"`)
	nftLine     = regexp.MustCompile(`("EnableNFTables":\s*)false`)
	anyType     = regexp.MustCompile(`("Type":\s*"[^"]+")`)
	capsLine    = regexp.MustCompile(`(add: \["NET_ADMIN", "NET_RAW")\]`)
	networkLine = regexp.MustCompile(`("Network":\s*"[^"]+",)`)
	// The flanneld container's mounts and the pod's volumes, where a TUN
	// device is added for udp and userspace WireGuard.
	runMount   = regexp.MustCompile(`(?m)^(\s*)volumeMounts:\n(\s*)- name: run\n`)
	volumesKey = regexp.MustCompile(`(?m)^(\s*)volumes:\n`)
)

// manifestEdit is one change an operator makes to kube-flannel.yml.
type manifestEdit struct {
	what string
	re   *regexp.Regexp
	repl string
}

// flannelManifest is the manifest as a user would edit it: the image
// references point at the local image, and the backend, nftables, dual
// stack, network policy and the TUN device are the lab's, each edited the
// way the manifest's comments and docs/INSTALL.md tell.
func flannelManifest(manifest []byte, image string, k *KubeSpec, backend string) ([]byte, error) {
	edits := []manifestEdit{{"image: lines", imageLine, "${1}" + image}}
	if backend != "" && backend != "vxlan" {
		edits = append(edits, manifestEdit{`net-conf.json "Type": "vxlan"`, backendType, `${1}"` + backend + `"`})
	}
	if k.NFTables {
		edits = append(edits, manifestEdit{`net-conf.json "EnableNFTables": false`, nftLine, "${1}true"})
	}
	if k.EBPF {
		edits = append(edits, manifestEdit{`net-conf.json's Backend "Type"`, anyType, "${1},\n        \"Datapath\": \"ebpf\""},
			manifestEdit{`the kube-flannel container's capabilities (deploy/patches/ebpf.yaml)`, capsLine, `${1}, "BPF", "PERFMON"]`})
	}
	if k.DualStack {
		edits = append(edits, manifestEdit{`net-conf.json "Network"`, networkLine,
			"${1}\n      \"EnableIPv6\": true,\n      \"IPv6Network\": \"" + kubeClusterCIDR6 + "\","})
	}
	if needsTUN(backend) {
		edits = append(edits,
			manifestEdit{"the flanneld container's volumeMounts (- name: run first)", runMount,
				"${1}volumeMounts:\n${2}- name: tun\n${2}  mountPath: /dev/net/tun\n${2}- name: run\n"},
			manifestEdit{"volumes:", volumesKey,
				"${1}volumes:\n${1}  - name: tun\n${1}    hostPath:\n${1}      path: /dev/net/tun\n${1}      type: CharDevice\n"})
	}
	out := manifest
	for _, e := range edits {
		if !e.re.Match(out) {
			return nil, fmt.Errorf("the manifest has no %s to edit", e.what)
		}
		out = e.re.ReplaceAll(out, []byte(e.repl))
	}
	if k.NetworkPolicy {
		return deploy.WithNetworkPolicy(out)
	}
	return out, nil
}

// needsTUN: udp and userspace WireGuard (this kernel has no wireguard
// module) open /dev/net/tun, which the DaemonSet must then mount.
func needsTUN(backend string) bool { return backend == "udp" || backend == "wireguard" }

// installFlannel installs flannel as a user does: kubectl apply of the
// manifest, or helm install of the chart.
func (kl *kubeLab) installFlannel(ctx context.Context) error {
	ref, err := imageRef(kl.k.FlannelImage)
	if err != nil {
		return err
	}
	if strings.HasSuffix(ref, ":latest") || !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		return fmt.Errorf("flannel image %s (in %s) has no tag or :latest, which kubelet always pulls, and nothing can be pulled here: tag it with a version", ref, kl.k.FlannelImage)
	}
	if kl.k.Helm {
		return kl.helmInstall(ctx, ref)
	}
	raw, err := os.ReadFile(kl.k.Manifest)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	m, err := flannelManifest(raw, ref, kl.k, kl.spec.Backend)
	if err != nil {
		return fmt.Errorf("%s: %w", kl.k.Manifest, err)
	}
	path := filepath.Join(kubeDir(kl.spec.StateDir), "kube-flannel.yml")
	if err := os.WriteFile(path, m, 0o644); err != nil {
		return err
	}
	if err := kl.kubectl(ctx, "apply", "-f", path); err != nil {
		return err
	}
	kl.rep.say("kubectl apply -f %s (image %s, backend %s%s)", kl.k.Manifest, ref, kl.spec.Backend, kl.k.options())
	return nil
}

// kubectl runs kubectl as the lab's admin.
func (kl *kubeLab) kubectl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, kl.k.bin("kubectl"),
		append([]string{"--kubeconfig", KubeconfigPath(kl.spec.StateDir)}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// options names the lab's choices beyond the backend, for the report.
func (k *KubeSpec) options() string {
	var o []string
	for _, c := range []struct {
		on   bool
		name string
	}{{k.NFTables, "nftables"}, {k.DualStack, "dual stack"}, {k.NetworkPolicy, "network policy"}, {k.EBPF, "eBPF fast path"}} {
		if c.on {
			o = append(o, c.name)
		}
	}
	if len(o) == 0 {
		return ""
	}
	return ", " + strings.Join(o, ", ")
}

// waitReady waits until every node is Ready and the flannel DaemonSet has
// a ready pod on each, reporting each node as it gets there.
func (kl *kubeLab) waitReady(ctx context.Context) error {
	cs, err := kl.api.AdminClient()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		st, err := clusterState(ctx, cs)
		if err == nil {
			for _, n := range kl.nodes {
				if msg := st.nodes[n.Name]; msg != "" && !seen[n.Name+msg] {
					seen[n.Name+msg] = true
					kl.rep.say("node %s: %s", n.Name, msg)
				}
			}
			if st.readyNodes == len(kl.nodes) && st.dsReady == len(kl.nodes) {
				kl.rep.say("%d nodes Ready, DaemonSet %s/%s Ready on every node", len(kl.nodes), flannelNamespace, flannelDaemonSet)
				return nil
			}
		}
		if dead := kl.deadControlPlane(); dead != "" {
			return fmt.Errorf("cluster not ready: %s", dead)
		}
		if werr := ctxwait.Sleep(ctx, 500*time.Millisecond); werr != nil {
			return fmt.Errorf("cluster not ready: %w; %s\n%s", werr, st.describe(err), kl.logTails())
		}
	}
}

// deadControlPlane names a controller that exited, with its log's end: a
// cluster without its controller manager never gets podCIDRs, so waiting
// on would only time out.
func (kl *kubeLab) deadControlPlane() string {
	for _, p := range kl.cp {
		if !p.Running() {
			return fmt.Sprintf("%s exited; end of %s:\n%s", p.Role, p.LogFile, testbed.LogTail(p.LogFile))
		}
	}
	return ""
}

// clusterView is what waitReady watches.
type clusterView struct {
	nodes      map[string]string // node -> "podCIDR x" or "Ready"
	readyNodes int
	dsReady    int
	dsDesired  int
	pending    []string // pods not ready, with why
}

func clusterState(ctx context.Context, cs kubernetes.Interface) (*clusterView, error) {
	v := &clusterView{nodes: map[string]string{}}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(rctx, metav1.ListOptions{})
	if err != nil {
		return v, err
	}
	for _, n := range nodes.Items {
		v.nodes[n.Name] = "registered, podCIDR " + n.Spec.PodCIDR
		if nodeReady(&n) {
			v.nodes[n.Name] = "Ready, podCIDR " + n.Spec.PodCIDR
			v.readyNodes++
		}
	}
	ds, err := cs.AppsV1().DaemonSets(flannelNamespace).Get(rctx, flannelDaemonSet, metav1.GetOptions{})
	if err == nil {
		v.dsReady, v.dsDesired = int(ds.Status.NumberReady), int(ds.Status.DesiredNumberScheduled)
	}
	pods, err := cs.CoreV1().Pods("").List(rctx, metav1.ListOptions{})
	if err == nil {
		for _, p := range pods.Items {
			if why := podTrouble(&p); why != "" {
				v.pending = append(v.pending, p.Namespace+"/"+p.Name+" on "+p.Spec.NodeName+": "+why)
			}
		}
	}
	return v, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podTrouble says why a pod is not ready, or "" when it is.
func podTrouble(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return ""
		}
	}
	var why []string
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		switch {
		case s.State.Waiting != nil:
			why = append(why, s.Name+" waiting: "+s.State.Waiting.Reason+" "+s.State.Waiting.Message)
		case s.State.Terminated != nil && s.State.Terminated.ExitCode != 0:
			why = append(why, fmt.Sprintf("%s exited %d: %s", s.Name, s.State.Terminated.ExitCode, s.State.Terminated.Message))
		}
	}
	if len(why) == 0 {
		why = append(why, string(p.Status.Phase))
	}
	return strings.Join(why, "; ")
}

func (v *clusterView) describe(err error) string {
	if v == nil || err != nil {
		return fmt.Sprintf("API server: %v", err)
	}
	var names []string
	for n, s := range v.nodes {
		names = append(names, n+" "+s)
	}
	sort.Strings(names)
	return fmt.Sprintf("nodes: %s; DaemonSet %s/%s: %d of %d ready; pods not ready: %s",
		strings.Join(names, ", "), flannelNamespace, flannelDaemonSet, v.dsReady, v.dsDesired, strings.Join(v.pending, " | "))
}

// logTails shows the end of each node's kubelet and containerd logs, and
// of the flannel container's, which says why it did not become ready.
func (kl *kubeLab) logTails() string {
	var b strings.Builder
	for _, n := range kl.nodes {
		files := []string{filepath.Join(n.dir, "kubelet.log"), filepath.Join(n.dir, "containerd.log")}
		pods, _ := filepath.Glob(n.root("/var/log/pods/" + flannelNamespace + "_*/kube-flannel/*.log"))
		files = append(files, pods...)
		for _, p := range files {
			fmt.Fprintf(&b, "--- %s:\n%s\n", p, testbed.LogTail(p))
		}
	}
	return b.String()
}
