// Package ctxwait waits for a duration unless a context ends first.
package ctxwait

import (
	"context"
	"time"
)

// Sleep waits d, or less when ctx ends first; then it returns ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
