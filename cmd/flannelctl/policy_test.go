package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestPolicyUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"policy", "explain", "--from", "x/a"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--to NS/POD[:PORT/PROTO]") {
		t.Errorf("without --to: exit %d, stderr %q", code, errOut.String())
	}
}
