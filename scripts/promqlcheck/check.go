package main

import (
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// expr parses one expression and checks each selector's metric and
// labels, and each grouping label against the labels of the metrics the
// expression selects.
func (c *checker) expr(where, src string) {
	e, err := c.p.ParseExpr(src)
	if err != nil {
		c.fail(where, "%q does not parse: %v", src, err)
		return
	}
	known := slices.Clone(targetLabels)
	var grouping []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			known = append(known, c.selector(where, n)...)
		case *parser.AggregateExpr:
			grouping = append(grouping, n.Grouping...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				grouping = append(grouping, n.VectorMatching.MatchingLabels...)
			}
		}
		return nil
	})
	for _, l := range grouping {
		if !slices.Contains(known, l) {
			c.fail(where, "%q groups by label %q, which none of its metrics has", src, l)
		}
	}
}

// selector checks one selector and returns the labels its series have.
func (c *checker) selector(where string, vs *parser.VectorSelector) []string {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	m, extra, ok := c.lookup(name)
	if !ok {
		c.fail(where, "metric %q is not one flanneld registers (renamed? see docs/METRICS.md)", name)
		return nil
	}
	have := append(append(slices.Clone(targetLabels), m.Labels...), extra...)
	for _, lm := range vs.LabelMatchers {
		if lm.Name != labels.MetricName && !slices.Contains(have, lm.Name) {
			c.fail(where, "metric %q has no label %q (it has %s)", name, lm.Name, strings.Join(have, ", "))
		}
	}
	return have
}

// lookup finds a metric by its series name: a histogram's series are
// <name>_bucket (with le), _sum and _count.
func (c *checker) lookup(name string) (Metric, []string, bool) {
	if m, ok := c.metrics[name]; ok {
		return m, nil, true
	}
	for suffix, extra := range map[string][]string{"_bucket": {"le"}, "_sum": nil, "_count": nil} {
		if m, ok := c.metrics[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && m.Type == "histogram" {
			return m, extra, true
		}
	}
	return Metric{}, nil, false
}
