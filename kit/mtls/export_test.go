package mtls

import (
	"context"
	"time"
)

// ReloadAt reads the files again as the reading goroutine does at a tick,
// as if at now. It shares the goroutine's state unguarded: call it only on
// credentials whose Refresh is longer than the test.
func (c *Credentials) ReloadAt(ctx context.Context, now time.Time) { c.reload(ctx, now) }
