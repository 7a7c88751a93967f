// Command e2ereport reads the JSON report of a Ginkgo suite (Kubernetes'
// e2e.test --ginkgo.json-report, written by scripts/k8s-e2e.sh) and
// prints one Markdown table row per spec that ran or was skipped while
// running (test name, result, time, and for every skip or failure the
// first line of its reason), then the closing line "N passed, N failed,
// N skipped". Specs the focus left out are not listed. It exits 1 when a
// spec failed.
//
//	e2ereport report.json
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// report is the part of Ginkgo's types.Report this reads.
type report struct {
	SpecReports []spec
}

type spec struct {
	ContainerHierarchyTexts []string
	LeafNodeType            string
	LeafNodeText            string
	State                   string
	StartTime               time.Time
	RunTime                 time.Duration
	Failure                 *struct{ Message string }
}

func (s spec) name() string {
	return strings.Join(append(append([]string{}, s.ContainerHierarchyTexts...), s.LeafNodeText), " ")
}

// ran: the spec ran, or skipped itself with a reason; specs outside the
// focus, or left when the run was interrupted, are skipped without one.
func (s spec) ran() bool {
	if s.LeafNodeType != "It" || s.StartTime.IsZero() {
		return false
	}
	return s.State != "skipped" || s.Failure != nil && s.Failure.Message != ""
}

func (s spec) reason() string {
	if s.Failure == nil || s.State == "passed" {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(s.Failure.Message), "\n")
	return strings.ReplaceAll(line, "|", `\|`)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: e2ereport REPORT.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2ereport: %v\n", err)
		os.Exit(2)
	}
	var reports []report
	if err := json.Unmarshal(data, &reports); err != nil {
		fmt.Fprintf(os.Stderr, "e2ereport: %s is not a Ginkgo JSON report: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	if failed := write(os.Stdout, reports); failed > 0 {
		os.Exit(1)
	}
}

// write prints the table and the closing line; it returns the number of
// failed specs (panicked, timed out and interrupted ones included).
func write(w io.Writer, reports []report) int {
	var passed, failed, skipped int
	fmt.Fprintln(w, "| test | result | time | reason |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if !s.ran() {
				continue
			}
			result := s.State
			switch s.State {
			case "passed":
				passed++
			case "skipped":
				skipped++
			case "failed":
				failed++
			default:
				result = "failed (" + s.State + ")"
				failed++
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", strings.ReplaceAll(s.name(), "|", `\|`), result, s.RunTime.Round(time.Second), s.reason())
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	return failed
}
