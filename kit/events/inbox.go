package events

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/duetkit/duet/kit/retention"
	"github.com/duetkit/duet/kit/sqldb"
)

// DefaultInboxRetention is the default of InboxConfig.Retention: a day
// longer than the stream keeps events by default (DefaultMaxAge), so that
// no event JetStream can still deliver, to a consumer replaying the stream
// from its start say, has been forgotten.
const DefaultInboxRetention = DefaultMaxAge + 24*time.Hour

// InboxConfig configures StartInboxPurge; zero values take defaults.
type InboxConfig struct {
	// Retention is how long events_inbox remembers that a consumer
	// processed an event; default DefaultInboxRetention, negative for
	// ever. Keep it longer than the stream keeps events (BusConfig.MaxAge,
	// whose default the default follows): an event delivered again after
	// its row is gone has its effect again.
	Retention time.Duration
	// PurgeInterval is how often rows older than Retention are deleted;
	// default DefaultPurgeInterval. Each statement deletes at most
	// PurgeChunk rows; while one finds a full chunk the next follows
	// after a pause as long as it took (kit/retention).
	PurgeInterval time.Duration
	// Logger receives purge failures; nil means slog.Default().
	Logger *slog.Logger
}

// PurgeInbox deletes up to PurgeChunk rows of events_inbox, of any
// consumer, processed before before, oldest first, and returns how many it
// deleted. StartInboxPurge calls it for a running service.
func PurgeInbox(ctx context.Context, db *sqldb.DB, before time.Time) (int64, error) {
	// A bounded chunk: a week of events deleted in one statement would
	// hold SQLite's only connection, and every transaction of the
	// service, for as long as it ran. events_inbox_processed serves the
	// sub-select.
	res, err := db.ExecContext(ctx, db.Rebind(`DELETE FROM events_inbox WHERE (consumer, event_id) IN (
		SELECT consumer, event_id FROM events_inbox WHERE processed_time < ?
		ORDER BY processed_time LIMIT `+strconv.Itoa(PurgeChunk)+`)`), before.UnixMicro())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// StartInboxPurge deletes, every cfg.PurgeInterval until the returned stop
// is called, the events_inbox rows older than cfg.Retention, so a
// consumer's inbox holds about Retention's worth of event ids rather than
// every id it ever saw. It keeps ctx's values but not its cancellation, as
// Relay.Start does; stop waits for the purge to end.
func StartInboxPurge(ctx context.Context, db *sqldb.DB, cfg InboxConfig) (stop func()) {
	if cfg.Retention == 0 {
		cfg.Retention = DefaultInboxRetention
	}
	if cfg.PurgeInterval <= 0 {
		cfg.PurgeInterval = DefaultPurgeInterval
	}
	// PurgeInbox deletes PurgeChunk rows a call, the limit given.
	return retention.Start(ctx, retention.Config{Retention: cfg.Retention, Interval: cfg.PurgeInterval, Chunk: PurgeChunk, Name: "events inbox", Logger: cfg.Logger},
		func(ctx context.Context, before time.Time, _ int) (int64, error) { return PurgeInbox(ctx, db, before) })
}
