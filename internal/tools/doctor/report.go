package doctor

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteText prints one line per check and, under each problem or warning,
// the evidence and the fix.
func WriteText(w io.Writer, rs []Result) {
	problems := 0
	for _, r := range rs {
		fmt.Fprintf(w, "%-8s %-22s %s\n", r.Status, r.Check, r.Summary)
		if r.Status == OK {
			continue
		}
		if r.Status == Problem {
			problems++
		}
		for _, e := range r.Evidence {
			fmt.Fprintf(w, "         evidence: %s\n", e)
		}
		if r.Fix != "" {
			fmt.Fprintf(w, "         fix: %s\n", r.Fix)
		}
	}
	if problems == 0 {
		fmt.Fprintf(w, "\nall %d checks passed\n", len(rs))
	} else {
		fmt.Fprintf(w, "\n%d of %d checks found a PROBLEM\n", problems, len(rs))
	}
}

// WriteJSON prints {"ok": bool, "checks": [...]}.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		OK     bool     `json:"ok"`
		Checks []Result `json:"checks"`
	}{!Failed(rs), rs})
}
