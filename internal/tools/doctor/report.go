package doctor

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteText prints every result and the closing count.
func WriteText(w io.Writer, rs []Result) {
	for _, r := range rs {
		WriteResult(w, r)
	}
	WriteSummary(w, rs)
}

// WriteResult prints one check's line and, under a problem, warning or
// skip, the evidence and the fix. Run's Progress calls it as each check
// ends, so a slow probe never hides the lines before it.
func WriteResult(w io.Writer, r Result) {
	fmt.Fprintf(w, "%-8s %-22s %s\n", r.Status, r.Check, r.Summary)
	if r.Status == OK {
		return
	}
	for _, e := range r.Evidence {
		fmt.Fprintf(w, "         evidence: %s\n", e)
	}
	if r.Fix != "" {
		fmt.Fprintf(w, "         fix: %s\n", r.Fix)
	}
}

// WriteSummary prints the closing count. Skipped checks are named apart:
// they found nothing either way.
func WriteSummary(w io.Writer, rs []Result) {
	problems, skipped := count(rs, Problem), count(rs, Skip)
	switch {
	case problems == 0 && skipped == 0:
		fmt.Fprintf(w, "\nall %d checks passed\n", len(rs))
	case problems == 0:
		fmt.Fprintf(w, "\nno PROBLEM found; %d of %d checks could not run (SKIP)\n", skipped, len(rs))
	case skipped == 0:
		fmt.Fprintf(w, "\n%d of %d checks found a PROBLEM\n", problems, len(rs))
	default:
		fmt.Fprintf(w, "\n%d of %d checks found a PROBLEM; %d could not run (SKIP) until it is fixed\n", problems, len(rs), skipped)
	}
}

func count(rs []Result, s Status) int {
	n := 0
	for _, r := range rs {
		if r.Status == s {
			n++
		}
	}
	return n
}

// Report is doctor's JSON document.
type Report struct {
	OK     bool     `json:"ok"`
	Checks []Result `json:"checks"`
}

// WriteJSON prints {"ok": bool, "checks": [...]}.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(Report{!Failed(rs), rs})
}
