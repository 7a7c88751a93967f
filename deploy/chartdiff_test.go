package deploy

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// fieldDiff is one field where two renderings differ: "Kind/ns/name
// path.to[name].field", with the value on each side (nil: absent).
type fieldDiff struct {
	where     string
	old, new_ any
}

func (d fieldDiff) String() string {
	return fmt.Sprintf("%s: %s -> %s", d.where, short(d.old), short(d.new_))
}

func short(v any) string {
	if v == nil {
		return "(absent)"
	}
	s := fmt.Sprintf("%v", v)
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// diffObjects compares two sets of normalised objects (byKey) field by
// field. Lists whose items all have a "name" (containers, volumes, env,
// ports, mounts) are matched by name, so an added item is one difference
// rather than a shift of every later one.
func diffObjects(old, new_ map[string]map[string]any) []fieldDiff {
	var out []fieldDiff
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range new_ {
		keys[k] = true
	}
	for _, k := range sortedKeys(keys) {
		o, n := old[k], new_[k]
		switch {
		case o == nil:
			out = append(out, fieldDiff{k, nil, "(object)"})
		case n == nil:
			out = append(out, fieldDiff{k, "(object)", nil})
		default:
			diffValue(k+" ", o, n, &out)
		}
	}
	return out
}

func diffValue(path string, a, b any, out *[]fieldDiff) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			sep := "."
			if strings.HasSuffix(path, " ") {
				sep = ""
			}
			diffValue(path+sep+k, am[k], bm[k], out)
		}
		return
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok {
		if an, bn := byName(al), byName(bl); an != nil && bn != nil {
			names := map[string]bool{}
			for k := range an {
				names[k] = true
			}
			for k := range bn {
				names[k] = true
			}
			for _, k := range sortedKeys(names) {
				diffValue(path+"["+k+"]", an[k], bn[k], out)
			}
			return
		}
		if len(al) == len(bl) {
			for i := range al {
				diffValue(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i], out)
			}
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, fieldDiff{path, a, b})
	}
}

// byName indexes a list of objects by their "name", or returns nil when
// an item has none or two share one.
func byName(l []any) map[string]any {
	if len(l) == 0 {
		return nil
	}
	m := map[string]any{}
	for _, it := range l {
		o, ok := it.(map[string]any)
		if !ok {
			return nil
		}
		name, ok := o["name"].(string)
		if !ok || m[name] != nil {
			return nil
		}
		m[name] = o
	}
	return m
}

// joinArgv replaces each container's command and args by one command,
// the argv the kubelet runs, so that where a chart puts an argument does
// not count as a difference.
func joinArgv(objs map[string]map[string]any) {
	for _, o := range objs {
		spec, _ := o["spec"].(map[string]any)
		tmpl, _ := spec["template"].(map[string]any)
		pod, _ := tmpl["spec"].(map[string]any)
		for _, list := range []string{"initContainers", "containers"} {
			cs, _ := pod[list].([]any)
			for _, c := range cs {
				c := c.(map[string]any)
				cmd, _ := c["command"].([]any)
				args, _ := c["args"].([]any)
				if len(args) > 0 {
					c["command"] = append(slices.Clone(cmd), args...)
				}
				delete(c, "args")
			}
		}
	}
}

// intended is a documented difference: fields matching where (a regular
// expression over fieldDiff.where) may differ, in the listed variants
// (nil: in all), for the reason given. deploy/README.md carries the same
// list.
type intended struct {
	where    string
	variants []string
	reason   string
}

// fromUpstreamChart lists every intended difference between upstream's
// chart and ours rendered with the same values (variant "" is the
// defaults, "upstream-values" upstream's own values.yaml given to ours).
var fromUpstreamChart = []intended{
	{`^.* metadata\.labels(\.k8s-app)?$`, nil,
		"ours labels every object k8s-app: flannel, as upstream's manifest does"},
	{`^DaemonSet/.* spec\.template\.metadata\.labels\.k8s-app$`, nil,
		"ours labels the pods k8s-app: flannel, as upstream's manifest does (the selector stays app: flannel)"},
	{`^ClusterRole//flannel rules`, nil,
		"least privilege: upstream's chart grants get/list/watch on pods, nodes and namespaces always, and adminnetworkpolicies with netpol; ours grants what flanneld calls (get pods, get/list/watch nodes, patch nodes/status) and, with netpol.enabled, list/watch pods, namespaces and networkpolicies"},
	{`^DaemonSet/.* spec\.template\.spec\.(initContainers|containers)\[(install-cni-plugin|install-cni|kube-flannel)\]\.image$`, []string{"", "wireguard", "netpol"},
		"ours defaults to its own image, which carries flanneld and the CNI plugin (upstream: two images)"},
	{`^DaemonSet/.* spec\.template\.spec\.initContainers\[install-cni\]\.command$`, nil,
		"ours copies the CNI config with cp -f (upstream's image has /opt/bin/install-conf, ours does not); command and args are compared as one argv"},
	{`^DaemonSet/.* spec\.template\.spec\.containers\[kube-flannel\]\.env\[(NODE_NAME|EVENT_QUEUE_DEPTH|CONT_WHEN_CACHE_NOT_READY)\]$`, nil,
		"ours passes NODE_NAME (saves a pod lookup) and not EVENT_QUEUE_DEPTH or CONT_WHEN_CACHE_NOT_READY, which flanneld does not read"},
	{`^DaemonSet/.* spec\.template\.spec\.(volumes|containers\[kube-flannel\]\.volumeMounts)\[cni-cache\]$`, nil,
		"ours mounts /var/lib/cni read-only: flanneld learns pods' addresses from the CNI result cache (anti-spoofing)"},
	{`^ConfigMap/.* data\.net-conf\.json\.EnableNFTables$`, []string{"", "wireguard", "netpol", "upstream-values"},
		"ours writes \"EnableNFTables\": false out, as both manifests do; upstream's chart writes it only when true (false is the default either way)"},
	{`^ConfigMap/.* data\.net-conf\.json \(upstream invalid JSON\)$`, []string{"wireguard"},
		"upstream's chart writes tunnelMode unquoted (\"Mode\": separate), which no JSON parser accepts; ours quotes it (compared after quoting upstream's)"},
	{`^DaemonSet/.* spec\.template\.spec\.containers\[kube-network-policies\]$`, []string{"netpol"},
		"netpol.enabled: upstream's chart adds a kube-network-policies container; ours has flanneld enforce the policies (--network-policy)"},
	{`^DaemonSet/.* spec\.template\.spec\.volumes\[lib-modules\]$`, []string{"netpol"},
		"netpol.enabled: upstream's kube-network-policies container mounts /lib/modules; flanneld needs no such mount"},
	{`^DaemonSet/.* spec\.template\.spec\.(volumes|containers\[kube-flannel\]\.volumeMounts)\[tun\]$`, []string{"wireguard"},
		"the wireguard backend gets /dev/net/tun, where userspace WireGuard creates its device; upstream's chart mounts no TUN device"},
	{`^DaemonSet/.* spec\.template\.spec\.containers\[kube-flannel\]\.command$`, []string{"netpol"},
		"netpol.enabled: ours adds --network-policy to flanneld's arguments"},
}

// checkIntended fails for each difference no entry explains, and for each
// entry of this variant that explains nothing (the list is kept true).
func checkIntended(t *testing.T, variant string, diffs []fieldDiff, list []intended) {
	t.Helper()
	used := make([]bool, len(list))
	for _, d := range diffs {
		ok := false
		for i, e := range list {
			if (e.variants == nil || slices.Contains(e.variants, variant)) && regexp.MustCompile(e.where).MatchString(d.where) {
				used[i], ok = true, true
			}
		}
		if !ok {
			t.Errorf("values %q: undocumented difference %s", variant, d)
		}
	}
	var stale []string
	for i, e := range list {
		if !used[i] && (slices.Contains(e.variants, variant)) {
			stale = append(stale, e.where)
		}
	}
	sort.Strings(stale)
	for _, s := range stale {
		t.Errorf("values %q: documented difference %s no longer occurs; update the list and deploy/README.md", variant, s)
	}
}

// The chart's defaults are upstream's chart's, so they differ from the
// manifest exactly where upstream's chart and manifest differ: the
// Namespace (the manifest has one, the chart uses the release's) and the
// NoExecute toleration.
func TestChartDefaultsDifferFromTheManifestAsUpstreams(t *testing.T) {
	bin := helmBinary(t)
	diffs := diffObjects(byKey(t, loadManifest(t)), byKey(t, renderChart(t, bin)))
	var got []string
	for _, d := range diffs {
		got = append(got, d.where)
	}
	want := []string{
		"DaemonSet/kube-flannel/kube-flannel-ds spec.template.spec.tolerations",
		"Namespace//kube-flannel",
	}
	if !slices.Equal(got, want) {
		t.Errorf("manifest vs chart defaults differ at %q, want %q:\n%v", got, want, diffs)
	}
}

func TestDiffObjects(t *testing.T) {
	a := map[string]map[string]any{"K/ns/a": {"spec": map[string]any{
		"containers": []any{map[string]any{"name": "x", "image": "i1"}, map[string]any{"name": "y"}},
		"list":       []any{"1", "2"},
	}}}
	b := map[string]map[string]any{"K/ns/a": {"spec": map[string]any{
		"containers": []any{map[string]any{"name": "x", "image": "i2"}, map[string]any{"name": "z"}},
		"list":       []any{"1", "2", "3"},
	}}, "K/ns/b": {}}
	var got []string
	for _, d := range diffObjects(a, b) {
		got = append(got, d.String())
	}
	want := []string{
		"K/ns/a spec.containers[x].image: i1 -> i2",
		"K/ns/a spec.containers[y]: map[name:y] -> (absent)",
		"K/ns/a spec.containers[z]: (absent) -> map[name:z]",
		"K/ns/a spec.list: [1 2] -> [1 2 3]",
		"K/ns/b: (absent) -> (object)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diffs\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
