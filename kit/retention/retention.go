// Package retention forgets what a service keeps only for a while: the
// rows of an inbox, an outbox or an idempotency table older than a
// retention. Start runs a Purge now and then for as long as the service
// runs; the Purge deletes a bounded chunk of the oldest rows per call, so
// that no statement holds the database (SQLite's only writer) for long,
// and Start calls it again at once while it finds full chunks.
package retention

import (
	"context"
	"log/slog"
	"time"
)

// DefaultInterval is the default of Config.Interval.
const DefaultInterval = time.Minute

// Purge deletes at most one chunk of the rows older than before, the
// oldest first, and returns how many it deleted.
type Purge func(ctx context.Context, before time.Time) (int64, error)

// Config tunes Start.
type Config struct {
	// Retention is how long rows are kept. Zero or negative keeps them
	// for ever: Start then never purges. (Callers map their own zero
	// default first; a retention of nothing, which would delete rows
	// as soon as they are written, is never meant.)
	Retention time.Duration
	// Interval is how often the purge runs; default DefaultInterval.
	Interval time.Duration
	// Chunk is the most rows one call of the Purge deletes. A call that
	// deleted Chunk rows or more is followed by the next at once, not an
	// Interval later, so a backlog is worked off a chunk at a time.
	// Zero or negative: every call is followed by an Interval's wait.
	Chunk int64
	// What names the rows in the log ("stock imports"); it is the value
	// of the failure log's "rows" attribute.
	What string
	// Logger receives purge failures; nil means slog.Default().
	Logger *slog.Logger
}

// Start calls purge at once and then every cfg.Interval with the time
// cfg.Retention ago, until the returned stop is called. It keeps ctx's
// values but not its cancellation (ctx is often a start-up deadline); stop
// ends the purge, waits for a call in flight to return, and may be called
// more than once. A failed call is logged and tried again an Interval
// later: a purge that is late only keeps rows longer.
func Start(ctx context.Context, cfg Config, purge Purge) (stop func()) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cfg.Retention <= 0 {
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
			n, err := purge(ctx, time.Now().Add(-cfg.Retention))
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				cfg.Logger.WarnContext(ctx, "retention: purge failed; trying again later", "rows", cfg.What, "err", err, "retry_in", next)
			case cfg.Chunk > 0 && n >= cfg.Chunk:
				next = 0
			}
			timer.Reset(next)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
