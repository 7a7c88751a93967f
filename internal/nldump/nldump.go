// Package nldump reads netlink dumps again when the kernel interrupted
// them. A dump (links, addresses, routes, neighbours) that races a change
// comes back flagged NLM_F_DUMP_INTR: the netlink library returns what it
// read with netlink.ErrDumpInterrupted, and that listing may miss or repeat
// entries. Acting on it could delete a route that exists or overlook one
// that is wrong, so every dump in flannel goes through List or Visit, which
// read again a few times before giving up.
package nldump

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// attempts bounds the reads: an interrupted dump means the table changed
// while it was read; a few changes in a row are normal at start-up, a
// table that never holds still for one read is reported.
const attempts = 5

// List returns what dump returns once a read completes uninterrupted.
func List[T any](dump func() (T, error)) (T, error) {
	var v T
	err := Visit(func() {}, func() error {
		var err error
		v, err = dump()
		return err
	})
	return v, err
}

// Visit runs an iterating dump (RouteListFilteredIter, ExecuteIter) until
// one completes uninterrupted. reset is called before every read after the
// first, to forget what the interrupted one visited.
func Visit(reset func(), dump func() error) error {
	var err error
	for i := range attempts {
		if i > 0 {
			reset()
		}
		if err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return fmt.Errorf("%w %d times in a row: the kernel table changes faster than it can be read; the next reconcile reads it again", err, attempts)
}
