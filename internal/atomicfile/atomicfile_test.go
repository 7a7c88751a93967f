package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestWriteFileReplacesWithPermission(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new content"), 0o644); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "new content" {
		t.Fatalf("content %q (%v), want %q", got, err, "new content")
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Errorf("directory holds %d entries (%v), want only the file: no temporary left", len(ents), err)
	}
}

func TestWriteFileMissingDirFails(t *testing.T) {
	p := filepath.Join(t.TempDir(), "no", "such", "file")
	if err := WriteFile(p, []byte("x"), 0o644); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
}

// A reader racing writers of two different contents only ever sees one of
// them whole.
func TestWriteFileReaderNeverSeesHalf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for i := range a {
		a[i], b[i] = 'a', 'b'
	}
	if err := WriteFile(p, a, 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			data := a
			if i%2 == 1 {
				data = b
			}
			if err := WriteFile(p, data, 0o644); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 500 {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(a) || (got[0] != got[len(got)-1]) {
			t.Fatalf("read %d bytes starting %q ending %q: a torn file", len(got), got[0], got[len(got)-1])
		}
	}
	close(stop)
	wg.Wait()
}

// A target name of up to NAME_MAX (255 bytes) works: the temporary file's
// name must not outgrow it (it used to be the name plus 12 bytes).
func TestWriteFileLongName(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{200, 243, 244, 255} {
		p := filepath.Join(dir, strings.Repeat("a", n-3)+fmt.Sprintf("%03d", n))
		if err := WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Errorf("%d-byte name: %v", n, err)
			continue
		}
		if got, err := os.ReadFile(p); err != nil || string(got) != "x" {
			t.Errorf("%d-byte name: read back %q, %v", n, got, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 4 {
		t.Errorf("directory holds %d entries, want the 4 files and no temporary", len(ents))
	}
}
