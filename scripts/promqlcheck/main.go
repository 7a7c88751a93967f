// Command promqlcheck parses every PromQL expression of alert rule files
// and Grafana dashboards with Prometheus's own parser, and checks that
// they use only the metrics and labels flanneld registers (the catalog,
// internal/metrics/catalog, as JSON). A module of its own: the Prometheus
// module is far too heavy for flannel's go.mod.
//
//	promqlcheck -catalog metrics.json deploy/monitoring/flannel-alerts.rules.yaml deploy/monitoring/flannel-dashboard.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Metric is one entry of the catalog.
type Metric struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Labels []string `json:"labels"`
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

func main() {
	catalog := flag.String("catalog", "", "the metrics flanneld registers, as JSON ([{name, type, labels}])")
	flag.Parse()
	metrics, err := readCatalog(*catalog)
	if err != nil {
		fmt.Fprintln(os.Stderr, "promqlcheck:", err)
		os.Exit(2)
	}
	c := &checker{metrics: metrics, p: parser.NewParser(parser.Options{})}
	n := 0
	for _, f := range flag.Args() {
		n += c.file(f)
	}
	for _, e := range c.errs {
		fmt.Fprintln(os.Stderr, e)
	}
	if len(c.errs) > 0 {
		os.Exit(1)
	}
	fmt.Printf("promqlcheck: %d expressions in %d files parse and use only flanneld's metrics and labels\n", n, flag.NArg())
}

func readCatalog(path string) (map[string]Metric, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ms []Metric
	if err := json.Unmarshal(b, &ms); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]Metric{}
	for _, m := range ms {
		out[m.Name] = m
	}
	return out, nil
}

type checker struct {
	metrics map[string]Metric
	p       parser.Parser
	errs    []string
}

func (c *checker) fail(where, format string, args ...any) {
	c.errs = append(c.errs, where+": "+fmt.Sprintf(format, args...))
}

// file checks a rules file (YAML) or a dashboard (JSON) and returns how
// many expressions it holds.
func (c *checker) file(path string) int {
	if strings.HasSuffix(path, ".json") {
		return c.dashboard(path)
	}
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, c.p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		c.fail(path, "%v", err)
	}
	if groups == nil {
		return 0
	}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			c.expr(fmt.Sprintf("%s: group %s, %s%s", path, g.Name, r.Alert, r.Record), r.Expr)
			n++
		}
	}
	return n
}
