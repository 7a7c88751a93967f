package pace

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The product's periodic loops go through Ticker or Every, so that their
// jitter is decided here; a time.Ticker in product code is a loop that
// slipped past. Test harnesses may tick as they like.
func TestNoTimeTickerInProductCode(t *testing.T) {
	tick := regexp.MustCompile(`\btime\.(NewTicker|Tick)\(`)
	for _, root := range []string{"../../cmd", "../../internal"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "harness" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if loc := tick.FindIndex(src); loc != nil {
				t.Errorf("%s: %s; use pace.NewTicker or pace.Every", path, src[loc[0]:loc[1]])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
