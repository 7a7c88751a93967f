// Package docs holds the operator's guides (INSTALL, MIGRATING,
// TROUBLESHOOTING, BACKENDS, ...) and the one reader of the command blocks
// in them that tests run as written: a fenced block right after a line
// `<!-- guide:TAG -->` belongs to TAG (k8s: the Kubernetes lab).
package docs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Block is one marked command block of a guide.
type Block struct {
	File string
	Line int // of the opening fence
	Text string
}

// Blocks returns the blocks of file marked with tag, in order, with the
// indentation of a block inside a list item removed.
func Blocks(file, tag string) ([]Block, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	marker := "<!-- guide:" + tag + " -->"
	var out []Block
	var cur *Block
	var indent string
	armed := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.Text += strings.TrimPrefix(line, indent) + "\n"
		case trimmed == marker:
			armed = true
		case armed && strings.HasPrefix(trimmed, "```"):
			indent = line[:len(line)-len(strings.TrimLeft(line, " "))]
			cur, armed = &Block{File: file, Line: n}, false
		case armed && trimmed != "":
			return nil, fmt.Errorf("%s:%d: %s is not followed by a fenced block", file, n, marker)
		}
	}
	if cur != nil || armed {
		return nil, fmt.Errorf("%s: unterminated %s block", file, marker)
	}
	return out, sc.Err()
}
