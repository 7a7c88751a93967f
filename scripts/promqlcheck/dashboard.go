package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// Grafana's variables, replaced by values of the same syntactic kind
// before parsing.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h", "${instance}", ".*", "$instance", ".*")

// Expand is what Prometheus receives for a dashboard expression.
func Expand(expr string) string { return grafanaVars.Replace(expr) }

func (c *checker) dashboard(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		c.fail(path, "%v", err)
		return 0
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		c.fail(path, "%v", err)
		return 0
	}
	n := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for i, t := range p.Targets {
				if t.Expr == "" {
					c.fail(path, "panel %q target %d has no expression", p.Title, i)
					continue
				}
				c.expr(fmt.Sprintf("%s: panel %q", path, p.Title), Expand(t.Expr))
				n++
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			c.labelValues(fmt.Sprintf("%s: variable %s", path, v.Name), v.Query)
			n++
		}
	}
	return n
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// labelValues checks a variable's label_values(selector, label) query.
func (c *checker) labelValues(where string, q any) {
	s, _ := q.(string)
	if m, ok := q.(map[string]any); ok {
		s, _ = m["query"].(string)
	}
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		c.fail(where, "query %q is not label_values(selector, label)", s)
		return
	}
	c.expr(where, fmt.Sprintf("count by (%s) (%s)", m[2], m[1]))
}
