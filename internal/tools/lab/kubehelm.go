package lab

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// helmInstall installs the chart as its values file tells an operator:
// the namespace created and labelled privileged first, then the release
// in it, with only the image, the backend and the lab's options set.
func (kl *kubeLab) helmInstall(ctx context.Context, ref string) error {
	if err := kl.kubectl(ctx, "create", "namespace", flannelNamespace); err != nil {
		return err
	}
	if err := kl.kubectl(ctx, "label", "namespace", flannelNamespace, "pod-security.kubernetes.io/enforce=privileged"); err != nil {
		return err
	}
	args := append([]string{"install", "flannel", kl.k.Chart, "--namespace", flannelNamespace, "--wait=false",
		"--kubeconfig", KubeconfigPath(kl.spec.StateDir)}, helmValues(ref, kl.k, kl.spec.Backend)...)
	out, err := exec.CommandContext(ctx, kl.k.HelmBin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	kl.rep.say("helm install flannel %s -n %s (image %s, backend %s%s)", kl.k.Chart, flannelNamespace, ref, kl.spec.Backend, kl.k.options())
	return nil
}

// helmValues are the --set flags for the lab's choices.
func helmValues(ref string, k *KubeSpec, backend string) []string {
	repo, tag := ref, ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		repo, tag = ref[:i], ref[i+1:]
	}
	if backend == "" {
		backend = "vxlan"
	}
	set := []string{
		"flannel.image.repository=" + repo, "flannel.image.tag=" + tag,
		"flannel.backend=" + backend,
		"flannel.enableNFTables=" + strconv.FormatBool(k.NFTables),
		"netpol.enabled=" + strconv.FormatBool(k.NetworkPolicy),
	}
	if k.DualStack {
		set = append(set, "podCidrv6="+kubeClusterCIDR6)
	}
	if k.EBPF {
		set = append(set, "flannel.datapath=ebpf")
	}
	var args []string
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return args
}
