package catalog

import (
	"fmt"
	"strings"
)

// Markdown is docs/METRICS.md.
func Markdown(ms []Metric) string {
	var b strings.Builder
	b.WriteString(`# flanneld's metrics

Generated from the collectors flanneld registers
(` + "`go test ./internal/metrics/catalog -run TestMetricsDoc -update`" + `
rewrites it; the test fails while it is out of date). flanneld serves them
at ` + "`/metrics`" + ` on ` + "`--metrics-address`" + `, or with ` + "`/healthz`" + ` on
` + "`--healthz-ip:--healthz-port`" + ` when that flag is empty. The Go runtime's
` + "`go_*`" + ` and the process's ` + "`process_*`" + ` metrics are served too.
Alert rules and a Grafana dashboard built on these are in
` + "`deploy/monitoring/`" + ` and the Helm chart (` + "`metrics.*`" + ` values).

| metric | type | labels | exported | meaning |
|---|---|---|---|---|
`)
	for _, m := range ms {
		when := m.When
		if when == "" {
			when = "always"
		}
		labels := "—"
		if len(m.Labels) > 0 {
			labels = "`" + strings.Join(m.Labels, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", m.Name, m.Type, labels, when, strings.ReplaceAll(m.Help, "|", `\|`))
	}
	return b.String()
}
