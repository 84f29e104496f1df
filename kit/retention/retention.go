// Package retention forgets what a service keeps only for a while: the
// rows of an inbox, an outbox or an idempotency table older than a
// retention. Start runs a Purge now and then for as long as the service
// runs; the Purge deletes a bounded chunk of the oldest rows per call, so
// that no statement holds the database (SQLite's only writer) for long,
// and Start calls it again while it finds full chunks, after a pause as
// long as the chunk took (at most an Interval), so that working off a
// backlog takes at most about half of the database's time (each purge's:
// a service with several may run them at once) and the service's own
// writes go on between chunks.
package retention

import (
	"context"
	"log/slog"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval = time.Minute
	DefaultChunk    = 1000
)

// Purge deletes at most limit of the rows older than before and returns
// how many it deleted. Deleting the oldest first keeps a backlog's chunks
// in order, so a purge that falls behind still forgets the oldest first.
type Purge func(ctx context.Context, before time.Time, limit int) (int64, error)

// Config tunes Start.
type Config struct {
	// Retention is how long rows are kept, at least: a row is deleted by
	// the first purge after it is that old. Negative keeps them for ever
	// (Start then never purges). Zero is a mistake, which Start refuses:
	// a retention of nothing would delete rows as soon as they are
	// written, and no default suits every kind of row.
	Retention time.Duration
	// Interval is how often the purge runs; default DefaultInterval.
	Interval time.Duration
	// Chunk is the limit each call of the Purge is given; default
	// DefaultChunk. A call that deleted that many is followed by the next
	// after a pause as long as the call took (at most an Interval), not
	// an Interval later, so a backlog is worked off a chunk at a time, at
	// most about half the time busy.
	Chunk int
	// Name names the rows in the log ("stock imports"), as the "purge"
	// attribute.
	Name string
	// Logger receives purge failures, and at DEBUG the rows deleted; nil
	// means slog.Default().
	Logger *slog.Logger
}

// Start calls purge at once and then every cfg.Interval with the time
// cfg.Retention ago, until the returned stop is called. It keeps ctx's
// values but not its cancellation (ctx is often a start-up deadline); stop
// ends the purge, waits for a call in flight to return, and may be called
// more than once. A failed call is logged and tried again an Interval
// later: a purge that is late only keeps rows longer. Start panics when
// cfg.Retention is zero.
func Start(ctx context.Context, cfg Config, purge Purge) (stop func()) {
	if cfg.Retention == 0 {
		panic("retention: Config.Retention is zero; give one, or a negative one to keep rows for ever")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Chunk <= 0 {
		cfg.Chunk = DefaultChunk
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cfg.Retention < 0 {
			return
		}
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			next := cfg.Interval
			began := time.Now()
			n, err := purge(ctx, began.Add(-cfg.Retention), cfg.Chunk)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				cfg.Logger.WarnContext(ctx, "retention: purge failed; trying again later", "purge", cfg.Name, "err", err, "retry_in", next)
			case n >= int64(cfg.Chunk):
				next = min(time.Since(began), cfg.Interval)
				fallthrough
			case n > 0:
				cfg.Logger.DebugContext(ctx, "retention: purged", "purge", cfg.Name, "deleted", n)
			}
			timer.Reset(next)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
