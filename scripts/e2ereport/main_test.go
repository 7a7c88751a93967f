package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// A report as e2e.test writes it: a passed spec, a failed one, one
// skipped from inside with a reason, and one the focus left out.
const sample = `[{"SpecReports":[
 {"ContainerHierarchyTexts":["[sig-network] Services"],"LeafNodeType":"It","LeafNodeText":"should serve [Conformance]","State":"passed","StartTime":"2026-12-05T19:00:00Z","RunTime":3000000000},
 {"ContainerHierarchyTexts":["[sig-network] DNS"],"LeafNodeType":"It","LeafNodeText":"should resolve","State":"failed","StartTime":"2026-12-05T19:00:00Z","RunTime":1000000000,"Failure":{"Message":"timed out | waiting\nmore"}},
 {"ContainerHierarchyTexts":["[sig-network] SCTP"],"LeafNodeType":"It","LeafNodeText":"should connect","State":"skipped","StartTime":"2026-12-05T19:00:00Z","Failure":{"Message":"kernel lacks sctp"}},
 {"ContainerHierarchyTexts":["[sig-storage] X"],"LeafNodeType":"It","LeafNodeText":"not focused","State":"skipped"},
 {"ContainerHierarchyTexts":["[sig-network] Y"],"LeafNodeType":"It","LeafNodeText":"not reached","State":"skipped","Failure":{"Message":"interrupted"}},
 {"LeafNodeType":"SynchronizedBeforeSuite","State":"passed","StartTime":"2026-12-05T19:00:00Z"}
]}]`

func TestWrite(t *testing.T) {
	var reports []report
	if err := json.Unmarshal([]byte(sample), &reports); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if failed := write(&b, reports); failed != 1 {
		t.Errorf("failed = %d, want 1", failed)
	}
	got := b.String()
	for _, want := range []string{
		"| [sig-network] Services should serve [Conformance] | passed | 3s |  |",
		`| [sig-network] DNS should resolve | failed | 1s | timed out \| waiting |`,
		"| [sig-network] SCTP should connect | skipped | 0s | kernel lacks sctp |",
		"1 passed, 1 failed, 1 skipped",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "not focused") || strings.Contains(got, "not reached") || strings.Contains(got, "BeforeSuite") {
		t.Errorf("report lists what did not run:\n%s", got)
	}
}
