//go:build upstreamchart

package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// upstreamChart is upstream flannel's chart directory (chart/kube-flannel
// of its repository), which this repository does not carry:
// scripts/chart-compare.sh passes it in FLANNEL_UPSTREAM_CHART and builds
// this file with -tags upstreamchart.
func upstreamChart(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FLANNEL_UPSTREAM_CHART")
	if dir == "" {
		t.Fatal("FLANNEL_UPSTREAM_CHART is not set: run scripts/chart-compare.sh <upstream chart dir>")
	}
	if _, err := os.Stat(filepath.Join(dir, "values.yaml")); err != nil {
		t.Fatalf("FLANNEL_UPSTREAM_CHART=%s is not a chart directory: %v", dir, err)
	}
	return dir
}

// unquotedMode matches upstream's `"Mode": separate` (tunnelMode written
// without quotes).
var unquotedMode = regexp.MustCompile(`("Mode": )([A-Za-z0-9]+)`)

// fixUpstream quotes upstream's unquoted Mode so its net-conf.json can be
// compared field by field, and reports whether it had to.
func fixUpstream(objs []object) bool {
	fixed := false
	for _, o := range objs {
		if o.kind() != "ConfigMap" {
			continue
		}
		data, _ := o.body["data"].(map[string]any)
		s, _ := data["net-conf.json"].(string)
		if q := unquotedMode.ReplaceAllString(s, `$1"$2"`); q != s {
			data["net-conf.json"], fixed = q, true
		}
	}
	return fixed
}

// TestChartAgainstUpstream renders upstream's chart and ours with the same
// values (each chart's defaults, then each variant file) and compares
// every field of every object: each difference must be one of
// fromUpstreamChart. Then ours renders with upstream's own values.yaml
// (every upstream key, upstream's defaults) to the same result, given
// with -f and in place of ours (as `helm upgrade --reuse-values` does).
func TestChartAgainstUpstream(t *testing.T) {
	up := upstreamChart(t)
	bin := helmBinary(t)
	compare := func(t *testing.T, variant string, upArgs, ourArgs []string) {
		t.Helper()
		upObjs := renderChartArgs(t, bin, up, upArgs...)
		var diffs []fieldDiff
		if fixUpstream(upObjs) {
			diffs = append(diffs, fieldDiff{"ConfigMap/kube-flannel/kube-flannel-cfg data.net-conf.json (upstream invalid JSON)", "Mode unquoted", "Mode quoted"})
		}
		// Upstream's chart puts flanneld's arguments in command, its
		// manifest (and ours) in args: the kubelet runs the same argv.
		upKeyed, ours := byKey(t, upObjs), byKey(t, renderChartArgs(t, bin, chartDir, ourArgs...))
		joinArgv(upKeyed)
		joinArgv(ours)
		diffs = append(diffs, diffObjects(upKeyed, ours)...)
		for _, d := range diffs {
			t.Logf("values %q: %s", variant, d)
		}
		checkIntended(t, variant, diffs, fromUpstreamChart)
	}
	for _, v := range variants {
		t.Run("values="+v, func(t *testing.T) {
			var args []string
			if v != "" {
				args = []string{"-f", valuesFile(v)}
			}
			compare(t, v, args, args)
		})
	}
	t.Run("values=upstream-values", func(t *testing.T) {
		compare(t, "upstream-values", nil, []string{"-f", filepath.Join(up, "values.yaml")})
	})
	// What `helm upgrade --reuse-values` from an upstream release renders:
	// ours with upstream's values.yaml in place of its own.
	t.Run("values=upstream-values-as-defaults", func(t *testing.T) {
		values, err := os.ReadFile(filepath.Join(up, "values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		ours := withDefaults(t, values)
		upObjs := byKey(t, renderChartArgs(t, bin, up))
		ourObjs := byKey(t, renderChartArgs(t, bin, ours))
		joinArgv(upObjs)
		joinArgv(ourObjs)
		checkIntended(t, "upstream-values", diffObjects(upObjs, ourObjs), fromUpstreamChart)
	})
}
