// Package imagetrim hands the program image's resident pages back to the
// page cache once start-up is over.
//
// A Go binary's text and read-only data are file-backed mappings. Running
// the init functions of ~300 packages, and the start-up paths that run
// once (first listing, first programming of every peer), touches pages all
// over the image, and the kernel maps 64 KiB around every fault (its
// fault-around): an idle flanneld holds about 22 MiB of its 33 MiB binary,
// most of it code that never runs again. Dropping those mappings is what
// the kernel's own reclaim would do to them under memory pressure; the
// pages stay in the page cache, and the ones the daemon still uses come
// back with a minor fault on their next use.
//
// Only mappings that are safe to drop are touched: the executable's own
// file, not writable, and without private (copy-on-write) pages, so that
// what comes back from the file is exactly what was there. A PIE binary's
// relocated read-only data (RELRO) has such private pages and is skipped.
package imagetrim

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Result says what Trim dropped.
type Result struct {
	Mappings int   // mappings of the image dropped
	Resident int64 // bytes of them that were resident before
	Skipped  int   // mappings of the image left alone (writable or private pages)
}

// Trim drops the resident pages of the running executable's read-only,
// unmodified mappings.
func Trim() (Result, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return Result{}, fmt.Errorf("stat own executable: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return Result{}, fmt.Errorf("read own mappings: %w", err)
	}
	defer f.Close()
	maps, err := parseSmaps(f)
	if err != nil {
		return Result{}, fmt.Errorf("read own mappings: %w", err)
	}
	var res Result
	for _, m := range maps {
		if !m.of(st.Dev, st.Ino) {
			continue
		}
		if !m.droppable() {
			res.Skipped++
			continue
		}
		if err := drop(m.start, m.end); err != nil {
			return res, fmt.Errorf("drop mapping %x-%x of the executable: %w", m.start, m.end, err)
		}
		res.Mappings++
		res.Resident += m.rss
	}
	return res, nil
}

// drop discards the page table entries of [start, end). For a private file
// mapping without private pages the next access maps the file's page
// again: the content cannot change.
func drop(start, end uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	start, end   uintptr
	perms        string
	major, minor uint32
	inode        uint64
	rss, anon    int64 // bytes
}

// of says whether m maps the file with the given device and inode.
func (m mapping) of(dev, ino uint64) bool {
	return m.inode == ino && m.major == unix.Major(dev) && m.minor == unix.Minor(dev)
}

// droppable: read-only, private (a shared mapping's pages are the file's,
// and someone may write them), and not one page copied on write.
func (m mapping) droppable() bool {
	return len(m.perms) == 4 && m.perms[1] == '-' && m.perms[3] == 'p' && m.anon == 0
}

// parseSmaps reads the mapping headers and their Rss and Anonymous sizes.
func parseSmaps(r io.Reader) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if strings.HasSuffix(f[0], ":") {
			if len(out) > 0 && len(f) >= 2 {
				setSize(&out[len(out)-1], f[0], f[1])
			}
			continue
		}
		m, err := parseHeader(f)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func setSize(m *mapping, field, kb string) {
	n, err := strconv.ParseInt(kb, 10, 64)
	if err != nil {
		return
	}
	switch field {
	case "Rss:":
		m.rss = n << 10
	case "Anonymous:":
		m.anon = n << 10
	}
}

// parseHeader parses "start-end perms offset major:minor inode [path]".
func parseHeader(f []string) (mapping, error) {
	var m mapping
	var lo, hi, maj, min uint64
	var err error
	if len(f) >= 5 {
		_, err = fmt.Sscanf(f[0]+" "+f[3], "%x-%x %x:%x", &lo, &hi, &maj, &min)
		if err == nil {
			m.inode, err = strconv.ParseUint(f[4], 10, 64)
		}
	} else {
		err = fmt.Errorf("too few fields")
	}
	if err != nil {
		return mapping{}, fmt.Errorf("mapping %q: %w", strings.Join(f, " "), err)
	}
	m.start, m.end, m.major, m.minor, m.perms = uintptr(lo), uintptr(hi), uint32(maj), uint32(min), f[1]
	return m, nil
}
