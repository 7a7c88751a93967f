// Command testreport reads `go test -json` streams and says what CI must
// know: which tests failed, which were skipped and why, and a closing line
// "N passed, N failed, N skipped". In CI ($CI=true, or -ci) every skip is a
// failure except a test that needs a kernel feature this machine lacks,
// whose skip message starts with "kernel lacks " (see tbtest.KernelLacks);
// those are listed with their reasons at the end of every run.
//
//	go test -json ./... | tee unit.json | testreport -progress
//	testreport unit.json e2e.json      # the verdict; exit 1 on failure
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build-output events
	FailedBuild string // a package's fail event after a build failure
}

// KernelPrefix starts the one kind of skip CI accepts.
const KernelPrefix = "kernel lacks "

type result struct {
	name    string // package or package.Test
	reason  string // a skip's message
	elapsed float64
}

// report accumulates the outcome of one or more streams.
type report struct {
	passed                  int
	failed, kernel, skipped []result
	failedPkgs              []result
	output                  map[string][]string // per test, until it ends
	failedTests             map[string]bool     // packages with a failed test
}

func newReport() *report {
	return &report{output: map[string][]string{}, failedTests: map[string]bool{}}
}

func key(e event) string { return e.Package + "." + e.Test }

// add takes one event; it returns a progress line for a finished test, or "".
func (r *report) add(e event) string {
	k := key(e)
	switch e.Action {
	case "output":
		if e.Test != "" || e.Package != "" {
			r.output[k] = append(r.output[k], e.Output)
		}
		return ""
	case "build-output":
		// The compiler's messages, keyed the way the package's fail
		// event names the build (FailedBuild).
		r.output["build:"+e.ImportPath] = append(r.output["build:"+e.ImportPath], e.Output)
		return ""
	case "pass":
		defer delete(r.output, k)
		if e.Test == "" {
			return ""
		}
		r.passed++
		return fmt.Sprintf("PASS %s (%.1fs)", k, e.Elapsed)
	case "skip":
		defer delete(r.output, k)
		if e.Test == "" {
			return "" // a package without tests
		}
		res := result{name: k, reason: skipReason(r.output[k]), elapsed: e.Elapsed}
		if strings.HasPrefix(res.reason, KernelPrefix) {
			r.kernel = append(r.kernel, res)
		} else {
			r.skipped = append(r.skipped, res)
		}
		return fmt.Sprintf("SKIP %s: %s", k, res.reason)
	case "fail":
		defer delete(r.output, k)
		out := strings.Join(r.output[k], "")
		if e.FailedBuild != "" {
			out = strings.Join(r.output["build:"+e.FailedBuild], "") + out
		}
		if e.Test == "" {
			// A package that fails without a failed test: build error,
			// panic, TestMain, timeout.
			if !r.failedTests[e.Package] {
				r.failedPkgs = append(r.failedPkgs, result{name: e.Package, reason: tail(out, 40)})
				return fmt.Sprintf("FAIL %s (package)\n%s", e.Package, tail(out, 40))
			}
			return ""
		}
		r.failedTests[e.Package] = true
		r.failed = append(r.failed, result{name: k, elapsed: e.Elapsed})
		return fmt.Sprintf("FAIL %s (%.1fs)\n%s", k, e.Elapsed, out)
	}
	return ""
}

// skipReason is the last message a test logged before it was skipped:
// t.Skip's text, without the "file_test.go:NN: " position.
func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "--- SKIP") || strings.HasPrefix(l, "=== ") {
			continue
		}
		if f, rest, ok := strings.Cut(l, ": "); ok && strings.Contains(f, ".go:") {
			return rest
		}
		return l
	}
	return "(no reason given)"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// read feeds a stream to r; progress, if set, receives a line per test,
// and text, if set, go test's own text output.
func (r *report) read(in io.Reader, progress, text io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// go test prints build errors as plain text around the JSON.
			for _, w := range []io.Writer{progress, text} {
				if w != nil {
					fmt.Fprintln(w, sc.Text())
				}
			}
			continue
		}
		if e.Action == "output" && text != nil {
			io.WriteString(text, e.Output)
		}
		if line := r.add(e); line != "" && progress != nil {
			fmt.Fprintln(progress, line)
		}
	}
	return sc.Err()
}

// verdict prints the summary and says whether the run passed.
func (r *report) verdict(w io.Writer, ci bool) bool {
	byName := func(rs []result) { sort.Slice(rs, func(i, j int) bool { return rs[i].name < rs[j].name }) }
	byName(r.kernel)
	byName(r.skipped)
	fmt.Fprintf(w, "\n== skipped because this machine's kernel lacks a feature (%d)\n", len(r.kernel))
	for _, s := range r.kernel {
		fmt.Fprintf(w, "  %s: %s\n", s.name, s.reason)
	}
	ok := len(r.failed) == 0 && len(r.failedPkgs) == 0
	if len(r.skipped) > 0 {
		what := "skipped"
		if ci {
			what, ok = "skipped, a failure in CI", false
		}
		fmt.Fprintf(w, "\n== %s (%d): every test must run; only %q skips are allowed\n", what, len(r.skipped), KernelPrefix+"...")
		for _, s := range r.skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.name, s.reason)
		}
	}
	if len(r.failed)+len(r.failedPkgs) > 0 {
		fmt.Fprintf(w, "\n== failed (%d)\n", len(r.failed)+len(r.failedPkgs))
		for _, f := range r.failedPkgs {
			fmt.Fprintf(w, "  %s (the package: build error, panic or timeout)\n", f.name)
		}
		for _, f := range r.failed {
			fmt.Fprintf(w, "  %s\n", f.name)
		}
	}
	failed := len(r.failed) + len(r.failedPkgs)
	if ci {
		failed += len(r.skipped)
	}
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped (%d for a missing kernel feature)\n",
		r.passed, failed, len(r.skipped)+len(r.kernel), len(r.kernel))
	return ok
}

func main() {
	progress := flag.Bool("progress", false, "read one stream on stdin and print a line per finished test")
	logFile := flag.String("log", "", "with -progress: also append go test's text output to this file")
	ci := flag.Bool("ci", os.Getenv("CI") == "true", "treat every skip but a kernel-feature one as a failure")
	flag.Parse()
	r := newReport()
	if *progress {
		var text io.Writer
		if *logFile != "" {
			f, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testreport:", err)
				os.Exit(2)
			}
			defer f.Close()
			text = f
		}
		if err := r.read(os.Stdin, os.Stdout, text); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(2)
		}
		return
	}
	for _, path := range flag.Args() {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(2)
		}
		err = r.read(f, nil, nil)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "testreport: %s: %v\n", path, err)
			os.Exit(2)
		}
	}
	if !r.verdict(os.Stdout, *ci) {
		os.Exit(1)
	}
}
