package access

import "context"

// Reload reads the file again as the reading goroutine does at a tick. It
// shares the goroutine's state unguarded: call it only on a policy whose
// Refresh is longer than the test.
func (p *Policy) Reload(ctx context.Context) { p.file.Check(ctx) }
