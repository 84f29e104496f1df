package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/sqldb"
)

// RelayConfig tunes a Relay; zero values take defaults.
type RelayConfig struct {
	// Logger receives publish failures; nil means slog.Default().
	Logger *slog.Logger
	// Metrics receives the relay's collectors (RelayPublishedMetric,
	// RelayFailuresMetric, OutboxOldestMetric); nil means
	// metrics.Default().
	Metrics *metrics.Metrics
	// Name is the outbox's label in the metrics, the service's name say;
	// default "outbox".
	Name string
	// BatchSize is how many pending rows one query reads; default 100.
	BatchSize int
	// PollInterval is how often the relay looks for rows when nobody calls
	// Notify (rows committed by another process, say); default 1s. It is
	// also the first retry delay after a failure.
	PollInterval time.Duration
	// MaxBackoff caps the delay between retries while NATS or the
	// database is failing; default 10s.
	MaxBackoff time.Duration
	// PublishTimeout bounds one publish, until JetStream acknowledges it;
	// default 5s.
	PublishTimeout time.Duration
	// Retention is how long published rows stay in the outbox before the
	// relay deletes them; default 24h. Negative keeps them forever.
	Retention time.Duration
	// PurgeInterval is how often the relay deletes rows older than
	// Retention; default 1 min. It deletes PurgeChunk rows per statement,
	// and while a statement finds a full chunk it goes on after a pause
	// as long as the statement took (at most an interval, as kit/retention
	// does), rather than waiting an interval: working off a backlog takes
	// about half of the database's time at most.
	PurgeInterval time.Duration
	// Linger is the least time between two reads of the outbox when
	// Notify wakes the relay; default 2ms, negative for none. Events that
	// come at most one per Linger go out at once; under load they wait up
	// to Linger and go out together, one read and one commit marking them
	// published for many events instead of one each.
	Linger time.Duration
}

// The names of a relay's metrics, each labelled "outbox" (RelayConfig.Name).
const (
	// RelayPublishedMetric counts the events relays have published.
	RelayPublishedMetric = "duet_events_relay_published_total"
	// RelayFailuresMetric counts the batches whose publishing or marking
	// failed (NATS or the database down), each retried after a backoff.
	RelayFailuresMetric = "duet_events_relay_failures_total"
	// OutboxOldestMetric is how long ago the oldest unpublished event of
	// the outbox was appended, as of the relay's last read: 0 when none
	// is waiting. An outbox whose events wait (NATS down, a stream gone)
	// grows while the service stays healthy; this is what to alert on.
	OutboxOldestMetric = "duet_events_outbox_oldest_pending_seconds"
)

// relayCollectors are the relays' metrics on one registry, registered
// by the first relay and shared by the others.
type relayCollectors struct {
	published, failures *prometheus.CounterVec
	oldest              *prometheus.GaugeVec
}

// newRelayCollectors registers the relays' metrics on reg, or finds them
// registered already. A collector that cannot be registered (a name
// taken by another kind of metric) is returned unregistered, with the
// error: the relay works, unmeasured.
func newRelayCollectors(reg prometheus.Registerer) (relayCollectors, error) {
	labels := []string{"outbox"}
	var errs []error
	c := relayCollectors{
		published: registerOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: RelayPublishedMetric, Help: "Events the outbox relay published to JetStream.",
		}, labels), &errs),
		failures: registerOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: RelayFailuresMetric, Help: "Relay batches that failed to publish or be marked published; each is retried.",
		}, labels), &errs),
		oldest: registerOnce(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: OutboxOldestMetric, Help: "Age of the oldest unpublished outbox event at the relay's last read; 0 when none waits.",
		}, labels), &errs),
	}
	return c, errors.Join(errs...)
}

// registerOnce is metrics.Register, its error added to errs.
func registerOnce[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	c, err := metrics.Register(reg, c)
	if err != nil {
		*errs = append(*errs, err)
	}
	return c
}

// Relay defaults.
const (
	DefaultBatchSize      = 100
	DefaultPollInterval   = time.Second
	DefaultMaxBackoff     = 10 * time.Second
	DefaultPublishTimeout = 5 * time.Second
	DefaultRetention      = 24 * time.Hour
	DefaultPurgeInterval  = time.Minute
	// PurgeChunk is the most published rows one DELETE removes: a day of
	// events deleted in one statement would hold SQLite's only connection,
	// and so every transaction of the service, for as long as it ran.
	PurgeChunk = 1000
	// DefaultLinger is the default of RelayConfig.Linger and of
	// ConsumerConfig.Linger.
	DefaultLinger = 2 * time.Millisecond
)

// Relay publishes committed outbox rows to a Bus.
type Relay struct {
	db  *sqldb.DB
	bus *Bus
	cfg RelayConfig
	log *slog.Logger
	// published, failures and oldest are this relay's series of the
	// metrics named by RelayPublishedMetric and the others.
	published, failures prometheus.Counter
	oldest              prometheus.Gauge
	notify              chan struct{}
	// markSQL is mark's UPDATE, in db's dialect.
	markSQL string
	// nextPurge is when Run next deletes old published rows; backlog:
	// the last purge found a full chunk, so nextPurge is a pause's end
	// rather than an interval's.
	nextPurge time.Time
	backlog   bool
	// purgeSQL is purge's DELETE, in db's dialect.
	purgeSQL string
	// lastLoad is when Run last read the outbox.
	lastLoad time.Time
}

// NewRelay returns a Relay from db's outbox to bus. Start it with Run.
func NewRelay(db *sqldb.DB, bus *Bus, cfg RelayConfig) *Relay {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.PollInterval {
		cfg.MaxBackoff = cfg.PollInterval
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.PurgeInterval <= 0 {
		cfg.PurgeInterval = DefaultPurgeInterval
	}
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	// The sub-select walks events_outbox_published oldest first; seq is
	// the primary key on both dialects.
	purgeSQL := db.Rebind(`DELETE FROM events_outbox WHERE seq IN (
		SELECT seq FROM events_outbox WHERE published_time IS NOT NULL AND published_time < ?
		ORDER BY published_time LIMIT ` + strconv.Itoa(PurgeChunk) + `)`)
	markSQL := db.Rebind(`UPDATE events_outbox SET published_time = ?
		WHERE published_time IS NULL AND seq IN (?` + strings.Repeat(", ?", markChunk-1) + `)`)
	m := cfg.Metrics
	if m == nil {
		m = metrics.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "outbox"
	}
	col, err := newRelayCollectors(m.Registry)
	if err != nil {
		cfg.Logger.Warn("events: relay metrics not registered", "err", err)
	}
	return &Relay{
		db: db, bus: bus, cfg: cfg, log: cfg.Logger, notify: make(chan struct{}, 1), markSQL: markSQL, purgeSQL: purgeSQL,
		published: col.published.WithLabelValues(cfg.Name),
		failures:  col.failures.WithLabelValues(cfg.Name),
		oldest:    col.oldest.WithLabelValues(cfg.Name),
	}
}

// Notify wakes the relay to publish now. It never blocks; call it after
// committing a transaction that appended events.
func (r *Relay) Notify() {
	select {
	case r.notify <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Start runs the relay in a goroutine until the returned stop is called,
// as a service does between its Open and Close. The relay keeps ctx's
// values but not its cancellation: it lives until stop, which waits for it
// to end and returns Run's error.
func (r *Relay) Start(ctx context.Context) (stop func() error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// Run publishes pending rows in outbox order until ctx ends, then returns
// nil. Each row is published with its event id as Nats-Msg-Id and marked
// published once JetStream has stored it; a publish under way when ctx
// ends is waited for (a second at most) and marked before Run returns.
// When publishing fails the relay retries the same row with backoff: it
// never skips one. Run one Run per
// Relay; several relays on one outbox (replicas) are safe, since JetStream
// drops the duplicates they publish.
func (r *Relay) Run(ctx context.Context) error {
	// Publishes run on sends, which outlives ctx by stopGrace: cut off at
	// once, a publish under way might be stored by JetStream without the
	// relay knowing, and the outbox would send it again.
	sends, endSends := context.WithCancel(context.WithoutCancel(ctx))
	defer endSends()
	stopping := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, endSends) })
	defer stopping()
	delay := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-r.notify:
			if delay > 0 {
				// Failing: a commit elsewhere does not make NATS come
				// back sooner, so keep to the backoff.
				continue
			}
			if wait := r.cfg.Linger - time.Since(r.lastLoad); wait > 0 {
				// Busy: let more events gather and take them together.
				resetTimer(timer, wait)
				continue
			}
		}
		more, err := r.publishBatch(ctx, sends)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			delay = min(max(2*delay, r.cfg.PollInterval), r.cfg.MaxBackoff)
			r.log.WarnContext(ctx, "events: relay failed; retrying", "err", err, "retry_in", delay)
		case more:
			delay = 0
			// A full batch: there may be more waiting right now. Under
			// a load that keeps every batch full the purge still gets
			// its turns.
			r.purge(ctx)
			resetTimer(timer, 0)
			continue
		default:
			delay = 0
			// After a full chunk, the next at its pause's end, though
			// a Notify woke the loop in between (and this pass came
			// too early to purge).
			r.purge(ctx)
			if r.backlog {
				resetTimer(timer, min(time.Until(r.nextPurge), r.cfg.PollInterval))
				continue
			}
		}
		resetTimer(timer, max(delay, r.cfg.PollInterval))
	}
}

// resetTimer makes t fire after d, whether or not it has fired already.
func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// pending is one outbox row to publish.
type pending struct {
	seq                         int64
	id, subject, typ, aggregate string
	payload                     []byte
	headers                     string
	occur                       int64
}

// publishBatch publishes up to BatchSize pending rows in order, on sends,
// stopping at the first failure or when ctx ends, then marks those
// published in one transaction. more reports a full batch.
func (r *Relay) publishBatch(ctx, sends context.Context) (more bool, err error) {
	defer func() {
		if err != nil && ctx.Err() == nil { // a stop is no failure
			r.failures.Inc()
		}
	}()
	r.lastLoad = time.Now()
	rows, err := r.load(ctx)
	if err != nil {
		return false, err
	}
	if len(rows) > 0 {
		r.oldest.Set(max(0, time.Since(time.UnixMicro(rows[0].occur)).Seconds()))
	} else {
		r.oldest.Set(0)
	}
	published := 0
	for _, row := range rows {
		if err = ctx.Err(); err != nil {
			// Stopping: publish nothing more, mark what went out.
			break
		}
		if err = r.publish(sends, row); err != nil {
			err = fmt.Errorf("publish event %s (%s): %w", row.id, row.subject, err)
			break
		}
		published++
	}
	// Marked even when ctx has ended meanwhile (the relay is stopping):
	// rows JetStream has stored but the outbox still calls pending would
	// go out again at the next start, as duplicates once the stream's
	// deduplication window has passed.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	if merr := r.mark(mctx, rows[:published]); merr != nil {
		// Published but not marked: the next attempt publishes them
		// again, and JetStream drops the duplicates.
		if ctx.Err() != nil {
			// Run returns quietly on a stop; this is worth a line.
			r.log.WarnContext(mctx, "events: relay stopped with published events unmarked", "err", merr)
		}
		return false, errors.Join(err, merr)
	}
	r.published.Add(float64(published))
	return err == nil && len(rows) == r.cfg.BatchSize, err
}

// markTimeout bounds marking a batch published, which outlives the
// relay's context so a stop does not undo a publish; stopGrace bounds
// what a publish under way may still take once the relay is stopping.
// Together they bound how much longer a stop takes: the stop of a
// process that has run out of time must not wait on a NATS server that
// has stopped answering for PublishTimeout.
const (
	markTimeout = 2 * time.Second
	stopGrace   = time.Second
)

// markChunk is how many rows one UPDATE of mark marks. Every UPDATE has
// this many placeholders (a short chunk repeats its last seq), so one
// statement text serves every batch: SQLite's statement cache and pgx's
// keep one entry for it.
const markChunk = 32

// mark records rows as published, markChunk rows per statement: one
// statement per row cost a round trip each on PostgreSQL and a statement
// execution each on SQLite.
func (r *Relay) mark(ctx context.Context, rows []pending) error {
	if len(rows) == 0 {
		return nil
	}
	now := time.Now().UnixMicro()
	args := make([]any, 1+markChunk)
	args[0] = now
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(rows, markChunk) {
			for i := range markChunk {
				args[1+i] = chunk[min(i, len(chunk)-1)].seq
			}
			if _, err := tx.ExecContext(ctx, r.markSQL, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark %d events published, from %s: %w", len(rows), rows[0].id, err)
	}
	return nil
}

// load reads the next pending rows, oldest first.
func (r *Relay) load(ctx context.Context) ([]pending, error) {
	rows, err := r.db.QueryContext(ctx, r.db.Rebind(
		`SELECT seq, id, subject, type, aggregate_id, payload, headers, occur_time
		 FROM events_outbox WHERE published_time IS NULL ORDER BY seq LIMIT ?`), r.cfg.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var out []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.seq, &p.id, &p.subject, &p.typ, &p.aggregate, &p.payload, &p.headers, &p.occur); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// errDisconnected makes the relay back off without waiting for a publish
// timeout while the connection is down.
var errDisconnected = errors.New("not connected to NATS")

// publish sends one row to JetStream and waits for it to be stored.
func (r *Relay) publish(ctx context.Context, p pending) error {
	if !r.bus.Conn.IsConnected() {
		return errDisconnected
	}
	msg := nats.NewMsg(r.bus.Subject(p.subject))
	msg.Data = p.payload
	var stored map[string]string
	if err := json.Unmarshal([]byte(p.headers), &stored); err != nil {
		// Written by Append, so never expected; publishing without
		// trace headers beats blocking the outbox forever.
		r.log.ErrorContext(ctx, "events: bad outbox headers", "event_id", p.id, "err", err)
	}
	for k, v := range stored {
		msg.Header.Set(k, v)
	}
	msg.Header.Set(HeaderMsgID, p.id)
	msg.Header.Set(HeaderEventType, p.typ)
	msg.Header.Set(HeaderAggregateID, p.aggregate)
	msg.Header.Set(HeaderOccurTime, time.UnixMicro(p.occur).UTC().Format(time.RFC3339Nano))
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	_, err := r.bus.JS.PublishMsg(pctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		r.restoreStream(ctx)
	}
	return err
}

// restoreStream creates the stream again, as OpenBus did, when no stream
// answered a publish and the server says it has none: an external NATS
// restarted without its store, or the stream deleted. Every publish
// failed until the process restarted, while the outbox grew. The failed
// publish is retried after the relay's backoff, as any other.
func (r *Relay) restoreStream(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	r.bus.recreateStream(sctx, r.log)
}

// purge deletes up to PurgeChunk rows published longer than Retention
// ago, when one is due (every PurgeInterval). After a full chunk it marks
// a backlog: more are due after a pause as long as this one took
// (nextPurge). Failing to purge only delays it.
func (r *Relay) purge(ctx context.Context) {
	now := time.Now()
	if r.cfg.Retention < 0 || now.Before(r.nextPurge) {
		return
	}
	r.nextPurge, r.backlog = now.Add(r.cfg.PurgeInterval), false
	res, err := r.db.ExecContext(ctx, r.purgeSQL, now.Add(-r.cfg.Retention).UnixMicro())
	if err != nil {
		if ctx.Err() == nil {
			r.log.WarnContext(ctx, "events: purge published outbox rows", "err", err)
		}
		return
	}
	if n, err := res.RowsAffected(); err == nil && n >= PurgeChunk {
		end := time.Now()
		r.nextPurge, r.backlog = end.Add(min(end.Sub(now), r.cfg.PurgeInterval)), true
	}
}
