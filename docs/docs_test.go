package docs

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
)

// Every backend has a section in BACKENDS.md whose net-conf.json example
// flanneld's parser accepts as written, with that section's type.
func TestBackendExamplesParse(t *testing.T) {
	f, err := os.Open("BACKENDS.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	examples := map[string]string{}
	section, inJSON, text := "", false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		case line == "```json":
			inJSON, text = true, ""
		case inJSON && line == "```":
			inJSON = false
			examples[section] = text
		case inJSON:
			text += line + "\n"
		}
	}
	for _, typ := range []string{"vxlan", "host-gw", "wireguard", "udp", "ipip", "ipsec", "alloc", "extension", "aws-vpc"} {
		ex, ok := examples[typ]
		if !ok {
			t.Errorf("BACKENDS.md has no example under \"## %s\"", typ)
			continue
		}
		cfg, err := config.Parse([]byte(ex))
		if err != nil {
			t.Errorf("%s example: %v\n%s", typ, err, ex)
			continue
		}
		if cfg.BackendType != typ || len(cfg.Warnings) > 0 {
			t.Errorf("%s example: type %q, warnings %q", typ, cfg.BackendType, cfg.Warnings)
		}
	}
}

// The marked blocks are found, in order, with a list item's indentation
// removed; a marker with no block after it is an error.
func TestBlocks(t *testing.T) {
	bs, err := Blocks("INSTALL.md", "k8s")
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) < 4 {
		t.Fatalf("%d guide:k8s blocks in INSTALL.md, want at least 4", len(bs))
	}
	for _, b := range bs {
		if strings.HasPrefix(b.Text, " ") || !strings.Contains(b.Text, "kubectl") {
			t.Errorf("INSTALL.md:%d: block %q", b.Line, b.Text)
		}
	}
	bad := t.TempDir() + "/bad.md"
	if err := os.WriteFile(bad, []byte("<!-- guide:k8s -->\ntext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Blocks(bad, "k8s"); err == nil {
		t.Error("a marker followed by text is accepted")
	}
}
