package lab

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// KubeSpec is what `lab up --kubernetes` adds to a Spec: where the
// Kubernetes and containerd binaries, the images and the manifest are.
// In this mode the lab runs a control plane in the hub and kubelet,
// containerd and kube-proxy in every node; flannel arrives through the
// manifest as the DaemonSet, never started by the lab.
type KubeSpec struct {
	Version       string // k8s.io/kubernetes release of the binaries
	KubeBinDir    string // <binary>-<Version>, from scripts/build-kube.sh
	ContainerdDir string // containerd, ctr, containerd-shim-runc-v2
	ImageDir      string // pause, agnhost, CoreDNS archives (scripts/build-kube-images.sh)
	FlannelImage  string // the flannel image archive (scripts/image.sh)
	Manifest      string // deploy/kube-flannel.yml
	Runc          string // runc binary
	// ContainerdMajor is containerd's major version (1 or 2), which
	// decides the configuration's format.
	ContainerdMajor int

	// How flannel is installed, as an operator would choose.
	Helm          bool   // install the chart with helm instead of kubectl apply of the manifest
	Chart         string // deploy/chart/flannel
	HelmBin       string // the helm binary (scripts/install-helm.sh)
	NetworkPolicy bool   // flanneld --network-policy (the manifest's commented lines, or the chart's value)
	NFTables      bool   // "EnableNFTables": true in net-conf.json
	// EBPF is the lab's --datapath ebpf: "Datapath": "ebpf" in the
	// Backend, and the BPF and PERFMON capabilities (Spec.Validate sets it).
	EBPF      bool `json:",omitempty"`
	DualStack bool // IPv6 next to IPv4: underlay, podCIDRs, services, net-conf.json
}

// Defaults of `lab up --kubernetes`; scripts/setup.sh builds them there.
const (
	DefaultKubeVersion      = "v1.37.2"
	DefaultKubeBinDir       = "/var/cache/flannel-go/kube"
	DefaultContainerdDir    = "/var/cache/flannel-go/containerd-v2.2.9"
	DefaultImageDir         = "/var/cache/flannel-go/images"
	defaultFlannelImageFile = "bin/flannel-image.tar"
	defaultManifestFile     = "deploy/kube-flannel.yml"
	defaultChartDir         = "deploy/chart/flannel"
	DefaultHelm             = "/var/cache/flannel-go/bin/helm"
	// Image names and tags of k8s.io/kubernetes v1.37.2: the kubelet's
	// default sandbox image (test/utils/image/manifest.go lists it too).
	pauseImage = "registry.k8s.io/pause:3.10.2"
)

// KubeImages are the archives from ImageDir every node imports, besides
// the flannel image (scripts/build-kube-images.sh names them so): pause
// first, the one a node cannot come up without.
func KubeImages() []string {
	return []string{"pause-3.10.2.tar", "agnhost-2.66.1-r4.tar", "glibc-dns-testing-2.1.1-r2.tar", "busybox-1.37.0-2.tar", "coredns-v1.14.6.tar"}
}

// kubeCommands are the Kubernetes binaries the lab runs.
func kubeCommands() []string {
	return []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}
}

const setupHint = "run scripts/setup.sh (it builds and caches the Kubernetes binaries, containerd and the images under /var/cache/flannel-go)"

// fill sets defaults: paths relative to the source tree (root, "" when
// flannelctl runs outside it) for the image and the manifest.
func (k *KubeSpec) fill(root string) {
	if k.Version == "" {
		k.Version = DefaultKubeVersion
	}
	if k.KubeBinDir == "" {
		k.KubeBinDir = DefaultKubeBinDir
	}
	if k.ContainerdDir == "" {
		k.ContainerdDir = DefaultContainerdDir
	}
	if k.ImageDir == "" {
		k.ImageDir = DefaultImageDir
	}
	if k.FlannelImage == "" && root != "" {
		k.FlannelImage = filepath.Join(root, defaultFlannelImageFile)
	}
	if k.Manifest == "" && root != "" {
		k.Manifest = filepath.Join(root, defaultManifestFile)
	}
	if k.Runc == "" {
		k.Runc = "/usr/sbin/runc"
	}
	if k.Chart == "" && root != "" {
		k.Chart = filepath.Join(root, defaultChartDir)
	}
	if k.HelmBin == "" {
		k.HelmBin = DefaultHelm
	}
}

// bin is the path of a Kubernetes binary.
func (k *KubeSpec) bin(cmd string) string {
	return filepath.Join(k.KubeBinDir, cmd+"-"+k.Version)
}

// check says what is missing, and how to get it.
func (k *KubeSpec) check() error {
	var missing []string
	for _, c := range kubeCommands() {
		if !isExec(k.bin(c)) {
			missing = append(missing, k.bin(c))
		}
	}
	for _, c := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if p := filepath.Join(k.ContainerdDir, c); !isExec(p) {
			missing = append(missing, p)
		}
	}
	// Only the pause image is needed to come up; agnhost and CoreDNS are
	// for tests, imported when there.
	if p := filepath.Join(k.ImageDir, KubeImages()[0]); !exists(p) {
		missing = append(missing, p)
	}
	if !isExec(k.Runc) {
		missing = append(missing, k.Runc+" (apt-get install runc)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("the Kubernetes lab needs %s: %s", strings.Join(missing, ", "), setupHint)
	}
	major, err := containerdMajor(filepath.Join(k.ContainerdDir, "containerd"))
	if err != nil {
		return err
	}
	k.ContainerdMajor = major
	if k.FlannelImage == "" || !exists(k.FlannelImage) {
		return fmt.Errorf("no flannel image archive at %q: build it with scripts/image.sh (writes bin/flannel-image.tar), or give one with --image-tar", k.FlannelImage)
	}
	if k.Helm {
		if !isExec(k.HelmBin) {
			return fmt.Errorf("--helm: no helm at %s: run scripts/install-helm.sh (setup.sh does)", k.HelmBin)
		}
		if k.Chart == "" || !exists(filepath.Join(k.Chart, "Chart.yaml")) {
			return fmt.Errorf("--helm: no chart at %q: run inside the source tree or give deploy/chart/flannel with --chart", k.Chart)
		}
		return nil
	}
	if k.Manifest == "" || !exists(k.Manifest) {
		return fmt.Errorf("no manifest at %q: run inside the source tree or give deploy/kube-flannel.yml with --manifest", k.Manifest)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// imageRef returns the name an image archive gives its image: RepoTags of
// a docker-archive's manifest.json, or the image name annotation of an
// OCI layout's index.json. `ctr images import` registers it under it.
func imageRef(archive string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("image archive %s has no manifest.json (docker-archive) or index.json (OCI layout) naming the image", archive)
		}
		if err != nil {
			return "", fmt.Errorf("read image archive %s: %w", archive, err)
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "manifest.json":
			return dockerArchiveRef(tr, archive)
		case "index.json":
			if ref, err := ociLayoutRef(tr); err == nil {
				return ref, nil
			}
		}
	}
}

func dockerArchiveRef(r io.Reader, archive string) (string, error) {
	var m []struct{ RepoTags []string }
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return "", fmt.Errorf("%s: manifest.json: %w", archive, err)
	}
	for _, e := range m {
		if len(e.RepoTags) > 0 {
			return e.RepoTags[0], nil
		}
	}
	return "", fmt.Errorf("%s: manifest.json names no image (RepoTags empty)", archive)
}

func ociLayoutRef(r io.Reader) (string, error) {
	var idx struct {
		Manifests []struct{ Annotations map[string]string }
	}
	if err := json.NewDecoder(r).Decode(&idx); err != nil {
		return "", err
	}
	for _, m := range idx.Manifests {
		for _, k := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
			if v := m.Annotations[k]; strings.Contains(v, "/") || strings.Contains(v, ":") {
				return v, nil
			}
		}
	}
	return "", errors.New("index.json names no image")
}

// prepareKube completes the Kubernetes part of spec and checks that
// everything it names is there, before the lab process starts.
func prepareKube(spec *Spec, say func(string, ...any)) error {
	root, _ := moduleRoot()
	spec.Kube.fill(root)
	if spec.CNIBinDir == "" {
		spec.CNIBinDir = testbed.DefaultCNIBinDir
	}
	if err := spec.Kube.check(); err != nil {
		return err
	}
	if spec.Segments == 2 {
		return errors.New("--kubernetes: one segment only for now (nodes get a default route via the hub, which only segment 1 reaches)")
	}
	if spec.Kube.DualStack && spec.Backend == "udp" {
		return errors.New("--dual-stack: the udp backend carries IPv4 only (as upstream's); use vxlan, host-gw or wireguard")
	}
	say("Kubernetes %s from %s, containerd from %s, images from %s", spec.Kube.Version, spec.Kube.KubeBinDir, spec.Kube.ContainerdDir, spec.Kube.ImageDir)
	if spec.Kube.Helm {
		say("flannel: chart %s installed with %s, image %s", spec.Kube.Chart, spec.Kube.HelmBin, spec.Kube.FlannelImage)
	} else {
		say("flannel: %s applied with image %s", spec.Kube.Manifest, spec.Kube.FlannelImage)
	}
	return nil
}

// containerdMajor asks containerd for its version: "containerd
// github.com/containerd/containerd/v2 v2.2.9 <commit>" (or "1.6.20~ds1").
func containerdMajor(bin string) (int, error) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", bin, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return 0, fmt.Errorf("%s --version said %q: cannot tell its version", bin, out)
	}
	switch v := strings.TrimPrefix(f[2], "v"); {
	case strings.HasPrefix(v, "1."):
		return 1, nil
	case strings.HasPrefix(v, "2."):
		return 2, nil
	default:
		return 0, fmt.Errorf("containerd %s (%s): the lab knows the configuration of 1.x and 2.x only", f[2], bin)
	}
}
