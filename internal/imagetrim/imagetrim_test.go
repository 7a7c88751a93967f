package imagetrim

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const smaps = `00400000-01308000 r-xp 00000000 fd:01 1234 /usr/bin/flanneld
Size:              15392 kB
Rss:               11296 kB
Anonymous:             0 kB
01308000-023ed000 r--p 00f08000 fd:01 1234 /usr/bin/flanneld
Rss:               11668 kB
Anonymous:             8 kB
023ed000-0248b000 rw-p 01fed000 fd:01 1234 /usr/bin/flanneld
Rss:                 504 kB
Anonymous:           120 kB
7f0000000000-7f0000001000 r--p 00000000 fd:01 99 /usr/lib/other.so
Rss:                   4 kB
Anonymous:             0 kB
7fffb5c21000-7fffb5c42000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
Anonymous:            16 kB
`

func TestParseSmapsPicksOnlyUnmodifiedReadOnlyImageMappings(t *testing.T) {
	maps, err := parseSmaps(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 5 {
		t.Fatalf("parsed %d mappings, want 5", len(maps))
	}
	dev := unix.Mkdev(0xfd, 0x01)
	var got []string
	for _, m := range maps {
		if m.of(dev, 1234) && m.droppable() {
			got = append(got, strconv.FormatUint(uint64(m.start), 16))
		}
	}
	// Text only: the read-only data has a page copied on write, the data
	// segment is writable, the library is another file.
	if strings.Join(got, ",") != "400000" {
		t.Errorf("droppable image mappings %v, want [400000]", got)
	}
	if maps[0].rss != 11296<<10 || maps[1].anon != 8<<10 || maps[0].end != 0x1308000 {
		t.Errorf("sizes or range misread: %+v %+v", maps[0], maps[1])
	}
}

func TestParseSmapsRejectsGarbage(t *testing.T) {
	if _, err := parseSmaps(strings.NewReader("not-a-range r-xp 0 fd:01 x\n")); err == nil {
		t.Error("malformed header accepted")
	}
}

// TestTrimReleasesOwnImage trims this test binary: its file-backed resident
// size must fall, and the code must keep running (pages fault back in).
func TestTrimReleasesOwnImage(t *testing.T) {
	before := rssFile(t)
	res, err := Trim()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	t.Logf("RssFile %d → %d kB; dropped %d mappings (%d kB resident), skipped %d", before, after, res.Mappings, res.Resident>>10, res.Skipped)
	if res.Mappings == 0 || res.Resident == 0 {
		t.Fatalf("nothing dropped: %+v", res)
	}
	if after >= before {
		t.Errorf("RssFile %d kB after trimming, not below %d kB before", after, before)
	}
	// Run code and read data the trim dropped.
	b, err := json.Marshal(map[string]any{"smaps": smaps, "n": 1})
	if err != nil || !strings.Contains(string(b), "flanneld") {
		t.Errorf("code after trim: %s, %v", b, err)
	}
}

func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
