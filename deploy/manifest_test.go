package deploy

import (
	"encoding/json"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flannelgo/flannel/internal/cniplugin"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// healthzPort is the port flanneld's /healthz, /readyz and /metrics listen
// on in the manifest: upstream's manifest runs --healthz-port=8081.
const healthzPort = 8081

func TestManifestHasExactlyTheFlannelObjects(t *testing.T) {
	objs := loadManifest(t)
	var got []string
	for _, o := range objs {
		got = append(got, o.key())
	}
	sort.Strings(got)
	want := []string{
		"ClusterRole//flannel",
		"ClusterRoleBinding//flannel",
		"ConfigMap/kube-flannel/kube-flannel-cfg",
		"DaemonSet/kube-flannel/kube-flannel-ds",
		"Namespace//kube-flannel",
		"ServiceAccount/kube-flannel/flannel",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("objects in %s (-want +got):\n%s", manifestPath, diff)
	}
}

func TestNamespaceAllowsPrivilegedPods(t *testing.T) {
	var ns corev1.Namespace
	decodeStrict(t, find(t, loadManifest(t), "Namespace", namespace), &ns)
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace label pod-security.kubernetes.io/enforce = %q, want privileged (flanneld uses hostNetwork and hostPath)", got)
	}
}

// rbacTuple is one permission: verb on group/resource.
type rbacTuple struct{ group, resource, verb string }

func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	checkClusterRole(t, loadManifest(t), false)
}

// The manifest keeps --network-policy and the rules it needs commented
// out; uncommented as its comments say, they turn policy on and grant
// exactly what it reads. The comment next to the flag names
// --anti-spoofing, which needs no flag of its own.
func TestManifestNetworkPolicyLines(t *testing.T) {
	plain := readFile(t, manifestPath)
	data, err := WithNetworkPolicy(plain)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(plain), "\n") - strings.Count(string(data), "\n"); got != 0 {
		t.Fatalf("uncommenting changed the number of lines by %d", got)
	}
	changed := 0
	for i, l := range strings.Split(string(data), "\n") {
		if l != strings.Split(string(plain), "\n")[i] {
			changed++
		}
	}
	// Nine lines of rules and the flag.
	if changed != 10 {
		t.Errorf("%d lines uncommented, want 10 (three ClusterRole rules of three lines, and --network-policy)", changed)
	}
	objs, err := decodeStream(data)
	if err != nil {
		t.Fatalf("manifest with network policy: %v", err)
	}
	checkClusterRole(t, objs, true)
	var ds appsv1.DaemonSet
	decodeStrict(t, find(t, objs, "DaemonSet", "kube-flannel-ds"), &ds)
	want := []string{"--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081", "--network-policy"}
	if got := ds.Spec.Template.Spec.Containers[0].Args; !slices.Equal(got, want) {
		t.Errorf("args with network policy %q, want %q", got, want)
	}
	var ds0 appsv1.DaemonSet
	decodeStrict(t, find(t, loadManifest(t), "DaemonSet", "kube-flannel-ds"), &ds0)
	if got := ds0.Spec.Template.Spec.Containers[0].Args; slices.Contains(got, "--network-policy") {
		t.Errorf("network policy is on in the plain manifest: %q", got)
	}
	i := strings.Index(string(plain), "#- --network-policy")
	if i < 0 || !strings.Contains(string(plain[max(0, i-600):i]), "--anti-spoofing") {
		t.Errorf("the comment next to the commented --network-policy line does not mention --anti-spoofing")
	}
}

func checkClusterRole(t *testing.T, objs []object, netpol bool) {
	t.Helper()
	var role rbacv1.ClusterRole
	decodeStrict(t, find(t, objs, "ClusterRole", "flannel"), &role)
	got := map[rbacTuple]bool{}
	for i, r := range role.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %d: resourceNames/nonResourceURLs are not expected: %+v", i, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" {
						t.Errorf("rule %d grants a wildcard: %+v", i, r)
					}
					got[rbacTuple{g, res, v}] = true
				}
			}
		}
	}
	// One tuple per kind of call internal/subnet/kube makes; annotations
	// go through nodes/status, so "patch" on nodes is deliberately absent.
	// The API server test drives the real manager with this role to prove
	// the set is also sufficient.
	want := map[rbacTuple]bool{
		{"", "pods", "get"}:           true,
		{"", "nodes", "get"}:          true,
		{"", "nodes", "list"}:         true,
		{"", "nodes", "watch"}:        true,
		{"", "nodes/status", "patch"}: true,
	}
	if netpol { // --network-policy reads, and only then
		for _, p := range []rbacTuple{
			{"", "pods", "list"}, {"", "pods", "watch"},
			{"", "namespaces", "list"}, {"", "namespaces", "watch"},
			{"networking.k8s.io", "networkpolicies", "list"}, {"networking.k8s.io", "networkpolicies", "watch"},
			{"policy.networking.k8s.io", "clusternetworkpolicies", "list"}, {"policy.networking.k8s.io", "clusternetworkpolicies", "watch"},
		} {
			want[p] = true
		}
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(rbacTuple{})); diff != "" {
		t.Errorf("ClusterRole flannel permissions (-want +got):\n%s", diff)
	}

	var binding rbacv1.ClusterRoleBinding
	decodeStrict(t, find(t, objs, "ClusterRoleBinding", "flannel"), &binding)
	wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "flannel", Namespace: namespace}}
	if diff := cmp.Diff(wantSubjects, binding.Subjects); diff != "" {
		t.Errorf("ClusterRoleBinding subjects (-want +got):\n%s", diff)
	}
	wantRef := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "flannel"}
	if binding.RoleRef != wantRef {
		t.Errorf("ClusterRoleBinding roleRef = %+v, want %+v", binding.RoleRef, wantRef)
	}
}

func TestNetConfParsesWithFlanneldsParser(t *testing.T) {
	cm := find(t, loadManifest(t), "ConfigMap", "kube-flannel-cfg")
	var typed corev1.ConfigMap
	decodeStrict(t, cm, &typed)
	cfg, err := config.Parse(configData(t, cm, "net-conf.json"))
	if err != nil {
		t.Fatalf("net-conf.json is refused by flanneld: %v", err)
	}
	if want := netip.MustParsePrefix("10.244.0.0/16"); cfg.Network != want {
		t.Errorf("Network = %v, want %v", cfg.Network, want)
	}
	if cfg.BackendType != "vxlan" || cfg.EnableNFTables || cfg.EnableIPv6 || !cfg.EnableIPv4 {
		t.Errorf("config = %+v, want IPv4 only, vxlan, iptables", cfg)
	}
	// EnableNFTables is written out (not left to the default) so operators
	// see the switch, as in upstream's manifest.
	var raw map[string]any
	if err := json.Unmarshal(configData(t, cm, "net-conf.json"), &raw); err != nil {
		t.Fatal(err)
	}
	if v, ok := raw["EnableNFTables"]; !ok || v != false {
		t.Errorf(`net-conf.json "EnableNFTables" = %v (present %v), want false written out`, v, ok)
	}
}

func TestCNIConfIsAValidConflist(t *testing.T) {
	checkCNIConf(t, configData(t, find(t, loadManifest(t), "ConfigMap", "kube-flannel-cfg"), "cni-conf.json"))
}

func checkCNIConf(t *testing.T, data []byte) {
	t.Helper()
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatalf("cni-conf.json is not a valid conflist: %v", err)
	}
	if list.Name != "cbr0" || list.CNIVersion != "0.3.1" {
		t.Errorf("conflist name %q cniVersion %q, want cbr0 0.3.1", list.Name, list.CNIVersion)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	if !slices.Equal(types, []string{"flannel", "portmap"}) {
		t.Fatalf("plugin chain = %v, want [flannel portmap]", types)
	}
	if !list.Plugins[1].Network.Capabilities["portMappings"] {
		t.Errorf("portmap plugin lacks capabilities.portMappings=true: %s", list.Plugins[1].Bytes)
	}

	// The flannel plugin itself must accept its part, and the delegate it
	// derives must keep hairpin mode and the default gateway.
	var plugin map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &plugin); err != nil {
		t.Fatal(err)
	}
	plugin["name"], plugin["cniVersion"] = list.Name, list.CNIVersion // what libcni injects at run time
	b, _ := json.Marshal(plugin)
	nc, err := cniplugin.ParseNetConf(b)
	if err != nil {
		t.Fatalf("flannel CNI plugin refuses its config: %v", err)
	}
	env := &subnetenv.Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24"),
		MTU: 1450, IPMasq: true,
	}
	d, err := cniplugin.DelegateConf(nc, env)
	if err != nil {
		t.Fatalf("flannel CNI plugin cannot build its delegate from this config: %v", err)
	}
	if d["hairpinMode"] != true || d["isDefaultGateway"] != true {
		t.Errorf("delegate = %v, want hairpinMode and isDefaultGateway true", d)
	}
}

func TestDaemonSetMatchesTheContract(t *testing.T) {
	objs := loadManifest(t)
	checkDaemonSet(t, objs, healthzPort)
	var ds appsv1.DaemonSet
	decodeStrict(t, find(t, objs, "DaemonSet", "kube-flannel-ds"), &ds)
	// As upstream's manifest: every NoSchedule taint, nothing more (the
	// DaemonSet controller adds the not-ready and unreachable ones).
	want := []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	if diff := cmp.Diff(want, ds.Spec.Template.Spec.Tolerations); diff != "" {
		t.Errorf("tolerations (-want +got):\n%s", diff)
	}
}

func checkDaemonSet(t *testing.T, objs []object, port int) {
	t.Helper()
	var ds appsv1.DaemonSet
	decodeStrict(t, find(t, objs, "DaemonSet", "kube-flannel-ds"), &ds)
	if ds.Namespace != namespace {
		t.Errorf("DaemonSet namespace %q, want %q", ds.Namespace, namespace)
	}
	if got := ds.Spec.Selector.MatchLabels; !cmp.Equal(got, map[string]string{"app": "flannel"}) {
		t.Errorf("selector %v, want upstream's immutable {app: flannel}", got)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" || spec.ServiceAccountName != "flannel" {
		t.Errorf("hostNetwork=%v priorityClassName=%q serviceAccountName=%q, want true, system-node-critical, flannel",
			spec.HostNetwork, spec.PriorityClassName, spec.ServiceAccountName)
	}
	volumes := checkVolumes(t, spec.Volumes)
	checkInitContainers(t, spec.InitContainers, volumes)
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(spec.Containers))
	}
	checkFlanneldContainer(t, spec.Containers[0], volumes, port)
}

// checkVolumes returns the volumes by name after checking the host paths.
func checkVolumes(t *testing.T, vols []corev1.Volume) map[string]corev1.Volume {
	t.Helper()
	byName := map[string]corev1.Volume{}
	for _, v := range vols {
		byName[v.Name] = v
	}
	hostPaths := map[string]string{
		"run": "/run/flannel", "cni-plugin": "/opt/cni/bin", "cni": "/etc/cni/net.d", "xtables-lock": "/run/xtables.lock",
		"cni-cache": "/var/lib/cni",
	}
	for name, path := range hostPaths {
		v, ok := byName[name]
		if !ok || v.HostPath == nil || v.HostPath.Path != path {
			t.Errorf("volume %q: want hostPath %s, got %+v", name, path, v)
		}
	}
	if hp := byName["xtables-lock"].HostPath; hp == nil || hp.Type == nil || *hp.Type != corev1.HostPathFileOrCreate {
		t.Errorf("volume xtables-lock must be hostPath type FileOrCreate (the lock file may not exist yet): %+v", hp)
	}
	if hp := byName["cni-cache"].HostPath; hp == nil || hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("volume cni-cache must be hostPath type DirectoryOrCreate (no pod has run on a new node yet): %+v", hp)
	}
	if cm := byName["flannel-cfg"].ConfigMap; cm == nil || cm.Name != "kube-flannel-cfg" {
		t.Errorf("volume flannel-cfg must be ConfigMap kube-flannel-cfg, got %+v", byName["flannel-cfg"])
	}
	if len(byName) != len(hostPaths)+1 {
		t.Errorf("volumes %v: want exactly run, cni-plugin, cni, xtables-lock, cni-cache, flannel-cfg", vols)
	}
	return byName
}

// mounts maps mount path to volume name, failing on mounts of unknown volumes.
func mounts(t *testing.T, c corev1.Container, volumes map[string]corev1.Volume) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, vm := range c.VolumeMounts {
		if _, ok := volumes[vm.Name]; !ok {
			t.Errorf("container %s mounts unknown volume %q", c.Name, vm.Name)
		}
		m[strings.TrimSuffix(vm.MountPath, "/")] = vm.Name
	}
	return m
}

func checkInitContainers(t *testing.T, cs []corev1.Container, volumes map[string]corev1.Volume) {
	t.Helper()
	want := []struct {
		name, src, dst, dstVolume string
	}{
		{"install-cni-plugin", "/flannel", "/opt/cni/bin/flannel", "cni-plugin"},
		{"install-cni", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist", "cni"},
	}
	if len(cs) != len(want) {
		t.Fatalf("init containers: got %d, want %d", len(cs), len(want))
	}
	for i, w := range want {
		c := cs[i]
		argv := append(slices.Clone(c.Command), c.Args...)
		if c.Name != w.name || !slices.Equal(argv, []string{"cp", "-f", w.src, w.dst}) {
			t.Errorf("init container %d: %s %q, want %s copying %s to %s", i, c.Name, argv, w.name, w.src, w.dst)
		}
		m := mounts(t, c, volumes)
		dir := w.dst[:strings.LastIndex(w.dst, "/")]
		if m[dir] != w.dstVolume {
			t.Errorf("init container %s: %s is not mounted from volume %s (mounts %v)", c.Name, dir, w.dstVolume, m)
		}
		if strings.HasPrefix(w.src, "/etc/kube-flannel/") && m["/etc/kube-flannel"] != "flannel-cfg" {
			t.Errorf("init container %s: /etc/kube-flannel is not the flannel-cfg ConfigMap (mounts %v)", c.Name, m)
		}
		checkImage(t, c)
	}
}

func checkImage(t *testing.T, c corev1.Container) {
	t.Helper()
	if !strings.HasPrefix(c.Image, "ghcr.io/flannelgo/flannel:v") {
		t.Errorf("container %s image %q, want ghcr.io/flannelgo/flannel:<version>", c.Name, c.Image)
	}
}

func checkFlanneldContainer(t *testing.T, c corev1.Container, volumes map[string]corev1.Volume, port int) {
	t.Helper()
	checkImage(t, c)
	if !slices.Equal(c.Command, []string{"/opt/bin/flanneld"}) {
		t.Errorf("command %q, want [/opt/bin/flanneld] (the path deploy/Dockerfile installs)", c.Command)
	}
	for _, a := range []string{"--ip-masq", "--kube-subnet-mgr", "--healthz-port=" + itoa(port)} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", c.Args, a)
		}
	}
	checkProbes(t, c, port)
	if cpu, mem := c.Resources.Requests[corev1.ResourceCPU], c.Resources.Requests[corev1.ResourceMemory]; cpu.Cmp(resource.MustParse("100m")) != 0 || mem.Cmp(resource.MustParse("50Mi")) != 0 {
		t.Errorf("resource requests cpu %s memory %s, want 100m and 50Mi", cpu.String(), mem.String())
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil ||
		!cmp.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("securityContext %+v, want privileged false with NET_ADMIN and NET_RAW added", sc)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "NODE_NAME": "spec.nodeName"} {
		e := env[name]
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
			t.Errorf("env %s: want fieldRef %s, got %+v", name, path, e)
		}
	}
	// flanneld has no event queue to size (node changes are coalesced per
	// node), so the manifest does not pretend to set one.
	if e, ok := env["EVENT_QUEUE_DEPTH"]; ok {
		t.Errorf("env EVENT_QUEUE_DEPTH = %q: flanneld does not read it; leave it out", e.Value)
	}
	m := mounts(t, c, volumes)
	for path, vol := range map[string]string{"/run/flannel": "run", "/etc/kube-flannel": "flannel-cfg", "/run/xtables.lock": "xtables-lock", "/var/lib/cni": "cni-cache"} {
		if m[path] != vol {
			t.Errorf("flanneld container: %s should be mounted from volume %s (mounts %v)", path, vol, m)
		}
	}
	for _, vm := range c.VolumeMounts {
		if vm.Name == "cni-cache" && !vm.ReadOnly {
			t.Errorf("flanneld container: /var/lib/cni must be mounted read-only: flanneld only reads the CNI results")
		}
	}
}

// checkProbes checks the health port and the probes are upstream
// manifest's: port "healthz", liveness /healthz after 10 s every 30 s,
// readiness /readyz after 5 s every 10 s, the other settings defaulted.
func checkProbes(t *testing.T, c corev1.Container, port int) {
	t.Helper()
	wantPorts := []corev1.ContainerPort{{Name: "healthz", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}}
	if diff := cmp.Diff(wantPorts, c.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	probe := func(path string, delay, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("healthz")}},
			InitialDelaySeconds: delay, PeriodSeconds: period,
		}
	}
	if diff := cmp.Diff(probe("/healthz", 10, 30), c.LivenessProbe); diff != "" {
		t.Errorf("livenessProbe (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(probe("/readyz", 5, 10), c.ReadinessProbe); diff != "" {
		t.Errorf("readinessProbe (-want +got):\n%s", diff)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
