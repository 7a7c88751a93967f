package main

import (
	"strings"
	"testing"
)

// A stream as `go test -json` writes it: a pass, a kernel skip, an
// environment skip, a failure, and a package that failed to build.
const stream = `{"Action":"run","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p","Test":"TestOK","Elapsed":0.5}
{"Action":"run","Package":"p","Test":"TestWG"}
{"Action":"output","Package":"p","Test":"TestWG","Output":"    wg_test.go:12: kernel lacks WireGuard: no wireguard module\n"}
{"Action":"output","Package":"p","Test":"TestWG","Output":"--- SKIP: TestWG (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestWG"}
{"Action":"run","Package":"p","Test":"TestRoot"}
{"Action":"output","Package":"p","Test":"TestRoot","Output":"    x_test.go:9: needs root\n"}
{"Action":"skip","Package":"p","Test":"TestRoot"}
{"Action":"run","Package":"p","Test":"TestBad"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"    x_test.go:20: got 1, want 2\n"}
{"Action":"fail","Package":"p","Test":"TestBad","Elapsed":0.1}
{"Action":"fail","Package":"p","Elapsed":1}
{"Action":"output","Package":"q","Output":"q/x.go:3:1: syntax error\n"}
{"Action":"fail","Package":"q","Elapsed":0}
{"Action":"skip","Package":"r","Elapsed":0}
`

func TestVerdict(t *testing.T) {
	for _, ci := range []bool{false, true} {
		r := newReport()
		var progress strings.Builder
		if err := r.read(strings.NewReader(stream), &progress, nil); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		ok := r.verdict(&out, ci)
		if ok {
			t.Errorf("ci=%v: verdict ok with a failed test and a failed package", ci)
		}
		wantLast := "1 passed, 2 failed, 2 skipped (1 for a missing kernel feature)"
		if ci {
			wantLast = "1 passed, 3 failed, 2 skipped (1 for a missing kernel feature)"
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if last := lines[len(lines)-1]; last != wantLast {
			t.Errorf("ci=%v: closing line %q, want %q\n%s", ci, last, wantLast, out.String())
		}
		for _, want := range []string{
			"p.TestWG: kernel lacks WireGuard: no wireguard module",
			"p.TestRoot: needs root",
			"q (the package",
			"  p.TestBad\n",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("ci=%v: summary lacks %q:\n%s", ci, want, out.String())
			}
		}
		if strings.Contains(out.String(), "  p (the package") {
			t.Errorf("package p is reported although its failed test already is:\n%s", out.String())
		}
		if !strings.Contains(progress.String(), "FAIL p.TestBad (0.1s)\n    x_test.go:20: got 1, want 2") {
			t.Errorf("progress lacks the failure with its output:\n%s", progress.String())
		}
	}
}

// A package that does not build fails the run, with the compiler's message.
func TestBuildFailureIsReported(t *testing.T) {
	in := `{"ImportPath":"bf [bf.test]","Action":"build-output","Output":"# bf [bf.test]\n"}
{"ImportPath":"bf [bf.test]","Action":"build-output","Output":"./x_test.go:3:28: undefined: undefined\n"}
{"ImportPath":"bf [bf.test]","Action":"build-fail"}
{"Action":"start","Package":"bf"}
{"Action":"output","Package":"bf","Output":"FAIL\tbf [build failed]\n"}
{"Action":"fail","Package":"bf","Elapsed":0,"FailedBuild":"bf [bf.test]"}
`
	r := newReport()
	var progress, out strings.Builder
	if err := r.read(strings.NewReader(in), &progress, nil); err != nil {
		t.Fatal(err)
	}
	if r.verdict(&out, true) {
		t.Errorf("a build failure passed:\n%s", out.String())
	}
	if !strings.Contains(progress.String(), "undefined: undefined") {
		t.Errorf("the progress lacks the compiler's message:\n%s", progress.String())
	}
	if !strings.HasSuffix(strings.TrimSpace(out.String()), "0 passed, 1 failed, 0 skipped (0 for a missing kernel feature)") {
		t.Errorf("closing line:\n%s", out.String())
	}
}

func TestOnlyKernelSkipsPassInCI(t *testing.T) {
	r := newReport()
	in := `{"Action":"output","Package":"p","Test":"TestWG","Output":"    wg_test.go:12: kernel lacks WireGuard: x\n"}
{"Action":"skip","Package":"p","Test":"TestWG"}
{"Action":"pass","Package":"p","Test":"TestOK"}
`
	if err := r.read(strings.NewReader(in), nil, nil); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if !r.verdict(&out, true) {
		t.Errorf("a kernel-feature skip failed the CI verdict:\n%s", out.String())
	}
}
