package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// upstreamKeys is every key of upstream flannel's chart values.yaml
// (v0.28.x), as a Helm path. Each must be accepted by values.schema.json
// and mean here what it means there; TestChartHonoursEveryUpstreamKey has
// one case per key.
var upstreamKeys = []string{
	"global.imagePullSecrets",
	"podCidr", "podCidrv6",
	"flannel.image.repository", "flannel.image.tag",
	"flannel.flannel_cni.image.repository", "flannel.flannel_cni.image.tag",
	"flannel.cniBinDir", "flannel.cniConfDir", "flannel.skipCNIConfigInstallation",
	"flannel.enableNFTables", "flannel.args", "flannel.backend",
	"flannel.backendPort", "flannel.mtu", "flannel.vni", "flannel.GBP", "flannel.directRouting", "flannel.macPrefix",
	"flannel.backendPortv6", "flannel.psk", "flannel.tunnelMode", "flannel.keepaliveInterval",
	"flannel.cniConf", "flannel.resources",
	"flannel.healthz.port", "flannel.healthz.livenessProbe", "flannel.healthz.readinessProbe",
	"flannel.tolerations", "flannel.nodeSelector",
	"netpol.enabled", "netpol.args", "netpol.image.repository", "netpol.image.tag",
}

// backendOf renders the chart with sets and returns net-conf.json's
// Backend, after checking flanneld parses the whole file.
func backendOf(t *testing.T, bin string, sets ...string) map[string]any {
	t.Helper()
	_, raw := renderedNetConf(t, renderChart(t, bin, sets...))
	b, _ := raw["Backend"].(map[string]any)
	return b
}

func podSpec(t *testing.T, objs []object) corev1.PodSpec {
	t.Helper()
	return daemonSet(t, objs).Spec.Template.Spec
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func hostPath(spec corev1.PodSpec, volume string) string {
	for _, v := range spec.Volumes {
		if v.Name == volume && v.HostPath != nil {
			return v.HostPath.Path
		}
	}
	return ""
}

// TestChartHonoursEveryUpstreamKey sets each key of upstream's chart, one
// at a time, and checks the rendered objects carry it with upstream's
// meaning: these are the expectations scripts/chart-compare.sh confirms
// against upstream's chart itself.
func TestChartHonoursEveryUpstreamKey(t *testing.T) {
	bin := helmBinary(t)
	covered := map[string]bool{}
	// run runs one case, recording the upstream keys it checks even when
	// -run leaves it out.
	run := func(name string, keys []string, f func(t *testing.T)) {
		for _, k := range keys {
			if !slices.Contains(upstreamKeys, k) {
				t.Fatalf("%s is not a key of upstream's chart", k)
			}
			covered[k] = true
		}
		t.Run(name, f)
	}

	run("global.imagePullSecrets", []string{"global.imagePullSecrets"}, func(t *testing.T) {
		got := podSpec(t, renderChart(t, bin, "global.imagePullSecrets[0].name=regcred")).ImagePullSecrets
		if want := []corev1.LocalObjectReference{{Name: "regcred"}}; !cmp.Equal(want, got) {
			t.Errorf("imagePullSecrets %v, want %v", got, want)
		}
		if got := podSpec(t, renderChart(t, bin)).ImagePullSecrets; got != nil {
			t.Errorf("imagePullSecrets by default %v, want none", got)
		}
	})
	run("podCidr,podCidrv6", []string{"podCidr", "podCidrv6"}, func(t *testing.T) { // and TestChartDualStackAndIPv6Only
		cfg, _ := renderedNetConf(t, renderChart(t, bin, "podCidr=10.10.0.0/16"))
		if cfg.Network.String() != "10.10.0.0/16" {
			t.Errorf("Network %v", cfg.Network)
		}
	})
	run("flannel.image,flannel.flannel_cni.image", []string{"flannel.image.repository", "flannel.image.tag", "flannel.flannel_cni.image.repository", "flannel.flannel_cni.image.tag"}, func(t *testing.T) {
		spec := podSpec(t, renderChart(t, bin, "flannel.image.repository=registry.example/flannel", "flannel.image.tag=v9.9.9"))
		for _, name := range []string{"install-cni-plugin", "install-cni", "kube-flannel"} {
			if got := container(t, spec, name).Image; got != "registry.example/flannel:v9.9.9" {
				t.Errorf("flannel.image only: container %s image %q (an empty flannel_cni.image means flannel.image)", name, got)
			}
		}
		spec = podSpec(t, renderChart(t, bin, "flannel.image.repository=registry.example/flannel", "flannel.image.tag=v9.9.9",
			"flannel.flannel_cni.image.repository=registry.example/cni", "flannel.flannel_cni.image.tag=v1.2.3"))
		want := map[string]string{"install-cni-plugin": "registry.example/cni:v1.2.3", "install-cni": "registry.example/flannel:v9.9.9", "kube-flannel": "registry.example/flannel:v9.9.9"}
		for name, image := range want {
			if got := container(t, spec, name).Image; got != image {
				t.Errorf("container %s image %q, want %q", name, got, image)
			}
		}
	})
	run("flannel.cniBinDir,flannel.cniConfDir", []string{"flannel.cniBinDir", "flannel.cniConfDir"}, func(t *testing.T) {
		spec := podSpec(t, renderChart(t, bin, "flannel.cniBinDir=/usr/libexec/cni", "flannel.cniConfDir=/etc/cni/custom.d"))
		if hostPath(spec, "cni-plugin") != "/usr/libexec/cni" || hostPath(spec, "cni") != "/etc/cni/custom.d" {
			t.Errorf("volumes %+v: want cni-plugin from /usr/libexec/cni and cni from /etc/cni/custom.d", spec.Volumes)
		}
		// Inside the containers the paths stay: the init containers copy
		// to /opt/cni/bin and /etc/cni/net.d, which are those host paths.
		if got := container(t, spec, "install-cni-plugin").Args; !slices.Equal(got, []string{"-f", "/flannel", "/opt/cni/bin/flannel"}) {
			t.Errorf("install-cni-plugin args %q", got)
		}
	})
	run("flannel.skipCNIConfigInstallation", []string{"flannel.skipCNIConfigInstallation"}, func(t *testing.T) {
		var names []string
		for _, c := range podSpec(t, renderChart(t, bin, "flannel.skipCNIConfigInstallation=true")).InitContainers {
			names = append(names, c.Name)
		}
		if !slices.Equal(names, []string{"install-cni-plugin"}) {
			t.Errorf("init containers %v, want only install-cni-plugin", names)
		}
	})
	run("flannel.enableNFTables", []string{"flannel.enableNFTables"}, func(t *testing.T) {
		cfg, _ := renderedNetConf(t, renderChart(t, bin, "flannel.enableNFTables=true"))
		if !cfg.EnableNFTables {
			t.Errorf("EnableNFTables not set")
		}
	})
	run("flannel.args", []string{"flannel.args"}, func(t *testing.T) {
		got := container(t, podSpec(t, renderChart(t, bin, "flannel.args={--ip-masq,--kube-subnet-mgr,--iface=eth1}")), "kube-flannel").Args
		if want := []string{"--ip-masq", "--kube-subnet-mgr", "--iface=eth1", "--healthz-port=8081"}; !slices.Equal(got, want) {
			t.Errorf("args %q, want %q", got, want)
		}
	})
	run("vxlan", []string{"flannel.backend", "flannel.backendPort", "flannel.mtu", "flannel.vni", "flannel.GBP", "flannel.directRouting", "flannel.macPrefix"}, func(t *testing.T) {
		got := backendOf(t, bin, "flannel.backendPort=4789", "flannel.vni=4096", "flannel.GBP=true", "flannel.directRouting=true",
			"flannel.mtu=1400", "flannel.macPrefix=0E-2B",
			// WireGuard's own keys mean nothing to VXLAN.
			"flannel.backendPortv6=51831", "flannel.keepaliveInterval=25", "flannel.tunnelMode=auto")
		want := map[string]any{"Type": "vxlan", "Port": 4789.0, "VNI": 4096.0, "GBP": true, "DirectRouting": true, "MTU": 1400.0, "MacPrefix": "0E-2B"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Backend (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]any{"Type": "vxlan"}, backendOf(t, bin)); diff != "" {
			t.Errorf("default Backend (-want +got):\n%s", diff)
		}
	})
	run("wireguard", []string{"flannel.backend", "flannel.backendPort", "flannel.backendPortv6", "flannel.psk", "flannel.tunnelMode", "flannel.keepaliveInterval", "flannel.mtu"}, func(t *testing.T) {
		psk := "Zmxhbm5lbC1nby10ZXN0LXByZS1zaGFyZWQta2V5ISE="
		got := backendOf(t, bin, "flannel.backend=wireguard", "flannel.backendPort=51830", "flannel.backendPortv6=51831",
			"flannel.psk="+psk, "flannel.tunnelMode=separate", "flannel.keepaliveInterval=25", "flannel.mtu=1420",
			// VXLAN's own keys mean nothing to WireGuard.
			"flannel.vni=7", "flannel.directRouting=true", "flannel.GBP=true")
		// backendPort is "ListenPort" for WireGuard, as upstream maps it,
		// and the Mode is a JSON string (upstream writes it unquoted).
		want := map[string]any{"Type": "wireguard", "ListenPort": 51830.0, "ListenPortV6": 51831.0, "PSK": psk,
			"Mode": "separate", "PersistentKeepaliveInterval": 25.0, "MTU": 1420.0}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Backend (-want +got):\n%s", diff)
		}
	})
	run("udp,host-gw", []string{"flannel.backend", "flannel.backendPort"}, func(t *testing.T) {
		if diff := cmp.Diff(map[string]any{"Type": "udp", "Port": 8300.0}, backendOf(t, bin, "flannel.backend=udp", "flannel.backendPort=8300", "flannel.mtu=1400")); diff != "" {
			t.Errorf("udp Backend (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]any{"Type": "host-gw"}, backendOf(t, bin, "flannel.backend=host-gw", "flannel.backendPort=8300", "flannel.mtu=1400", "flannel.directRouting=true")); diff != "" {
			t.Errorf("host-gw Backend (-want +got):\n%s", diff)
		}
		// Our own escape hatch, for keys upstream's chart has no value for.
		got := backendOf(t, bin, "flannel.backend=ipip", "flannel.extraBackendOptions.DirectRouting=true")
		if diff := cmp.Diff(map[string]any{"Type": "ipip", "DirectRouting": true}, got); diff != "" {
			t.Errorf("ipip Backend with extraBackendOptions (-want +got):\n%s", diff)
		}
	})
	run("flannel.cniConf", []string{"flannel.cniConf"}, func(t *testing.T) {
		conf := `{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"flannel","delegate":{"hairpinMode":false,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
		path := filepath.Join(t.TempDir(), "cni-conf.json")
		writeFile(t, path, []byte(conf))
		objs := renderChartArgs(t, bin, chartDir, "--set-file", "flannel.cniConf="+path)
		data := configData(t, find(t, objs, "ConfigMap", "kube-flannel-cfg"), "cni-conf.json")
		if string(data) != conf {
			t.Errorf("cni-conf.json %s, want %s", data, conf)
		}
		checkCNIConfDefault(t, renderChart(t, bin))
	})
	run("flannel.resources", []string{"flannel.resources"}, func(t *testing.T) {
		c := container(t, podSpec(t, renderChart(t, bin, "flannel.resources.limits.memory=256Mi")), "kube-flannel")
		if m := c.Resources.Limits[corev1.ResourceMemory]; m.Cmp(resource.MustParse("256Mi")) != 0 {
			t.Errorf("memory limit %s, want 256Mi", m.String())
		}
		if cpu := c.Resources.Requests[corev1.ResourceCPU]; cpu.Cmp(resource.MustParse("100m")) != 0 {
			t.Errorf("cpu request %s, want the default 100m kept", cpu.String())
		}
	})
	run("flannel.healthz", []string{"flannel.healthz.port", "flannel.healthz.livenessProbe", "flannel.healthz.readinessProbe"}, func(t *testing.T) {
		checkDaemonSet(t, renderChart(t, bin), 8081) // upstream's default port and probes
		c := container(t, podSpec(t, renderChart(t, bin, "flannel.healthz.port=9099",
			"flannel.healthz.livenessProbe.periodSeconds=15", "flannel.healthz.livenessProbe.failureThreshold=4",
			"flannel.healthz.readinessProbe.initialDelaySeconds=2")), "kube-flannel")
		if !slices.Contains(c.Args, "--healthz-port=9099") || len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9099 || c.Ports[0].Name != "healthz" {
			t.Errorf("healthz.port=9099: args %q ports %+v", c.Args, c.Ports)
		}
		if p := c.LivenessProbe; p.PeriodSeconds != 15 || p.FailureThreshold != 4 || p.InitialDelaySeconds != 10 || p.HTTPGet.Port.String() != "healthz" {
			t.Errorf("livenessProbe %+v, want period 15, failureThreshold 4, the default delay 10, on port healthz", p)
		}
		if p := c.ReadinessProbe; p.InitialDelaySeconds != 2 || p.PeriodSeconds != 10 || p.HTTPGet.Path != "/readyz" {
			t.Errorf("readinessProbe %+v, want delay 2, the default period 10, on /readyz", p)
		}
	})
	run("flannel.tolerations", []string{"flannel.tolerations"}, func(t *testing.T) {
		// Upstream's chart default: every NoExecute and NoSchedule taint.
		want := []corev1.Toleration{
			{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		}
		if diff := cmp.Diff(want, podSpec(t, renderChart(t, bin)).Tolerations); diff != "" {
			t.Errorf("default tolerations (-want +got):\n%s", diff)
		}
		got := podSpec(t, renderChart(t, bin, "flannel.tolerations[0].key=dedicated", "flannel.tolerations[0].operator=Exists")).Tolerations
		if diff := cmp.Diff([]corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}, got); diff != "" {
			t.Errorf("tolerations (-want +got):\n%s", diff)
		}
	})
	run("flannel.nodeSelector", []string{"flannel.nodeSelector"}, func(t *testing.T) {
		got := podSpec(t, renderChart(t, bin, "flannel.nodeSelector.kubernetes\\.io/arch=amd64")).NodeSelector
		if want := map[string]string{"kubernetes.io/arch": "amd64"}; !cmp.Equal(want, got) {
			t.Errorf("nodeSelector %v, want %v", got, want)
		}
	})
	run("netpol", []string{"netpol.enabled", "netpol.args", "netpol.image.repository", "netpol.image.tag"}, func(t *testing.T) {
		objs := renderChart(t, bin, "netpol.enabled=true")
		want := []string{"--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081", "--network-policy"}
		spec := podSpec(t, objs)
		if got := container(t, spec, "kube-flannel").Args; !slices.Equal(got, want) {
			t.Errorf("args %q, want %q", got, want)
		}
		if len(spec.Containers) != 1 {
			t.Errorf("%d containers: flanneld enforces the policies itself, no other container runs", len(spec.Containers))
		}
		checkClusterRole(t, objs, true)
		checkClusterRole(t, renderChart(t, bin), false)
		// Upstream's settings of its kube-network-policies container are
		// accepted and change nothing.
		same := renderChart(t, bin, "netpol.enabled=true", "netpol.args={--v=4}", "netpol.image.repository=registry.example/knp", "netpol.image.tag=v0")
		if diff := cmp.Diff(byKey(t, objs), byKey(t, same)); diff != "" {
			t.Errorf("netpol.args and netpol.image changed the objects:\n%s", diff)
		}
	})

	for _, k := range upstreamKeys {
		if !covered[k] {
			t.Errorf("no case checks upstream's key %s", k)
		}
	}
}

func checkCNIConfDefault(t *testing.T, objs []object) {
	t.Helper()
	checkCNIConf(t, configData(t, find(t, objs, "ConfigMap", "kube-flannel-cfg"), "cni-conf.json"))
}

// flannel.antiSpoofing is ours: --anti-spoofing defaults to true in
// flanneld, so the chart passes the flag only to turn it off.
func TestChartAntiSpoofing(t *testing.T) {
	bin := helmBinary(t)
	for sets, want := range map[string][]string{
		"":                    {"--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"},
		"netpol.enabled=true": {"--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081", "--network-policy"},
		"netpol.enabled=true,flannel.antiSpoofing=false": {"--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081", "--network-policy", "--anti-spoofing=false"},
	} {
		var args []string
		if sets != "" {
			args = strings.Split(sets, ",")
		}
		got := container(t, podSpec(t, renderChart(t, bin, args...)), "kube-flannel").Args
		if !slices.Equal(got, want) {
			t.Errorf("--set %s: args %q, want %q", sets, got, want)
		}
	}
}

// Every variant values file renders, flanneld parses its net-conf.json,
// and each file's values land where TestChartHonoursEveryUpstreamKey says.
func TestChartVariants(t *testing.T) {
	bin := helmBinary(t)
	for _, v := range variants[1:] {
		t.Run(v, func(t *testing.T) {
			objs := renderChartArgs(t, bin, chartDir, "-f", valuesFile(v))
			cfg, raw := renderedNetConf(t, objs)
			spec := podSpec(t, objs)
			switch v {
			case "vxlan":
				if !cfg.EnableNFTables || cfg.Network.String() != "10.42.0.0/16" || raw["Backend"].(map[string]any)["GBP"] != true {
					t.Errorf("net-conf.json %v", raw)
				}
				if len(spec.InitContainers) != 1 || spec.NodeSelector["kubernetes.io/arch"] != "amd64" || len(spec.ImagePullSecrets) != 1 {
					t.Errorf("pod spec %+v", spec)
				}
			case "wireguard":
				if cfg.BackendType != "wireguard" || !cfg.EnableIPv6 || raw["Backend"].(map[string]any)["ListenPort"] != 51830.0 {
					t.Errorf("net-conf.json %v", raw)
				}
			case "netpol":
				if cfg.EnableIPv4 || cfg.BackendType != "host-gw" || len(raw["Backend"].(map[string]any)) != 1 {
					t.Errorf("net-conf.json %v", raw)
				}
				c := container(t, spec, "kube-flannel")
				if !slices.Contains(c.Args, "--network-policy") || c.LivenessProbe != nil {
					t.Errorf("flanneld %+v", c)
				}
				checkClusterRole(t, objs, true)
			}
		})
	}
}

// Every key of upstream's chart is accepted at once (a values file written
// for upstream's chart works unchanged), and a key neither chart knows is
// refused with its name, not dropped.
func TestChartSchema(t *testing.T) {
	bin := helmBinary(t)
	path := filepath.Join(t.TempDir(), "every-upstream-key.yaml")
	writeFile(t, path, everyUpstreamKeyValues(t))
	renderChartArgs(t, bin, chartDir, "-f", path)

	for set, name := range map[string]string{
		"flannel.backendPrt=4789":                      "backendPrt", // misspelt
		"netpol.enable=true":                           "enable",     // misspelt
		"podCIDR=10.0.0.0/16":                          "podCIDR",    // wrong case
		"flannel.healthzPort=10244":                    "healthzPort",
		"flannel.healthz.livenessProbe.httpGet.port=1": "httpGet", // the chart owns the handler
		"flannel.flannel_cni.image.registry=x":         "registry",
	} {
		_, err := helm(t, bin, "template", "flannel", chartDir, "--set", set)
		if err == nil || !strings.Contains(err.Error(), "'"+name+"'") {
			t.Errorf("--set %s: want a refusal naming '%s', got %v", set, name, err)
		}
	}
	_, err := helm(t, bin, "template", "flannel", chartDir, "--set", "flannel.tunnelMode=both")
	if err == nil || !strings.Contains(err.Error(), "tunnelMode") {
		t.Errorf("tunnelMode=both: want a refusal naming tunnelMode, got %v", err)
	}
}

// exampleValue is a value of the right type for an upstream key.
func exampleValue(key string) any {
	switch key {
	case "global.imagePullSecrets":
		return []any{map[string]any{"name": "regcred"}}
	case "flannel.args", "netpol.args":
		return []any{"--ip-masq", "--kube-subnet-mgr"}
	case "flannel.backendPort", "flannel.backendPortv6", "flannel.mtu", "flannel.vni", "flannel.keepaliveInterval", "flannel.healthz.port":
		return map[string]int{"flannel.backendPort": 8472, "flannel.backendPortv6": 51821, "flannel.mtu": 1500,
			"flannel.vni": 1, "flannel.keepaliveInterval": 25, "flannel.healthz.port": 8081}[key]
	case "flannel.GBP", "flannel.directRouting", "flannel.skipCNIConfigInstallation", "flannel.enableNFTables", "netpol.enabled":
		return false
	case "flannel.psk":
		return 0 // what upstream's values.yaml suggests for "none"
	case "flannel.tunnelMode":
		return "separate"
	case "flannel.cniBinDir":
		return "/opt/cni/bin"
	case "flannel.cniConfDir":
		return "/etc/cni/net.d"
	case "flannel.cniConf":
		return `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}]}`
	case "flannel.resources":
		return map[string]any{"requests": map[string]any{"cpu": "100m"}}
	case "flannel.healthz.livenessProbe", "flannel.healthz.readinessProbe":
		return map[string]any{"initialDelaySeconds": 5, "periodSeconds": 10}
	case "flannel.tolerations":
		return []any{map[string]any{"operator": "Exists"}}
	case "flannel.nodeSelector":
		return map[string]any{"kubernetes.io/os": "linux"}
	case "podCidr":
		return "10.244.0.0/16"
	case "podCidrv6":
		return "fd00:10:244::/56"
	case "flannel.backend":
		return "vxlan"
	default: // image repositories and tags, macPrefix
		return "x"
	}
}

// setPath sets a dotted path in nested maps.
func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// everyUpstreamKeyValues is a values file setting every key of upstream's
// chart (and none of ours), each to a value of its type.
func everyUpstreamKeyValues(t *testing.T) []byte {
	t.Helper()
	all := map[string]any{}
	for _, k := range upstreamKeys {
		setPath(all, k, exampleValue(k))
	}
	b, err := yaml.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withDefaults copies the chart with values as its defaults, which is how
// `helm upgrade --reuse-values` renders it: the previous release's
// coalesced values take the place of the new chart's values.yaml.
func withDefaults(t *testing.T, values []byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "flannel")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "values.yaml"), values)
	return dir
}

// `helm upgrade --reuse-values` from a release of upstream's chart renders
// this chart with upstream's values and none of the keys only this chart
// has: it must still render, with upstream's defaults' meaning (no
// namespace of its own, no --anti-spoofing flag, EnableNFTables false).
func TestChartRendersWithOnlyUpstreamKeys(t *testing.T) {
	bin := helmBinary(t)
	objs := renderChartArgs(t, bin, withDefaults(t, everyUpstreamKeyValues(t)))
	for _, o := range objs {
		if o.kind() == "Namespace" {
			t.Errorf("renders %s", o.key())
		}
		if ns := o.meta("namespace"); ns != "" && ns != namespace {
			t.Errorf("%s is not in the release's namespace", o.key())
		}
	}
	cfg, _ := renderedNetConf(t, objs)
	if cfg.EnableNFTables || cfg.BackendType != "vxlan" {
		t.Errorf("net-conf.json %+v", cfg)
	}
	c := container(t, podSpec(t, objs), "kube-flannel")
	if want := []string{"--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
}
