package nldump

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestListRetriesInterruptedDumps(t *testing.T) {
	reads := 0
	got, err := List(func() ([]int, error) {
		reads++
		if reads < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || reads != 3 {
		t.Fatalf("got %v, %v after %d reads; want [1 2], nil after 3", got, err, reads)
	}
}

func TestListGivesUpAndSaysWhy(t *testing.T) {
	reads := 0
	_, err := List(func() ([]int, error) { reads++; return nil, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || reads != attempts {
		t.Fatalf("err = %v after %d reads; want ErrDumpInterrupted after %d", err, reads, attempts)
	}
}

func TestListPassesOtherErrorsAtOnce(t *testing.T) {
	boom := errors.New("boom")
	reads := 0
	if _, err := List(func() (int, error) { reads++; return 0, boom }); !errors.Is(err, boom) || reads != 1 {
		t.Fatalf("err = %v after %d reads; want boom after 1", err, reads)
	}
}

func TestVisitResetsBeforeEachRetry(t *testing.T) {
	var seen []int
	reads := 0
	err := Visit(func() { seen = seen[:0] }, func() error {
		reads++
		seen = append(seen, reads)
		if reads == 1 {
			return netlink.ErrDumpInterrupted
		}
		return nil
	})
	if err != nil || len(seen) != 1 || seen[0] != 2 {
		t.Fatalf("seen %v, err %v; want [2], nil", seen, err)
	}
}
