package containerid

import (
	"strings"
	"testing"
)

func TestFileName(t *testing.T) {
	for _, id := range []string{"abc", strings.Repeat("a", 255)} {
		if got, err := FileName("/d", id); err != nil || got != id {
			t.Errorf("FileName(%d bytes) = %q, %v; want the ID itself", len(id), got, err)
		}
	}
	long1, long2 := strings.Repeat("x", 299)+"a", strings.Repeat("x", 299)+"b"
	n1, err1 := FileName("/d", long1)
	n2, err2 := FileName("/d", long2)
	if err1 != nil || err2 != nil || len(n1) != 255 || len(n2) != 255 || n1 == n2 || !strings.Contains(n1, "+") {
		t.Errorf("long IDs: %q (%v), %q (%v); want distinct 255-byte names with '+'", n1, err1, n2, err2)
	}
	for _, bad := range []string{"", ".", "..", "a/b", `a\b`} {
		if _, err := FileName("/d", bad); err == nil || !strings.Contains(err.Error(), "/d") {
			t.Errorf("FileName(%q) = %v, want an error naming the directory", bad, err)
		}
	}
}
