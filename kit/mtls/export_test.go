package mtls

import (
	"context"
	"time"
)

// ReloadAt reads the files again as the reading goroutine does at a tick,
// as if at now.
func (c *Credentials) ReloadAt(ctx context.Context, now time.Time) { c.reload(ctx, now) }
