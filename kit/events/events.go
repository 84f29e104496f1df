// Package events moves domain events from a service's database to the
// services that react to them, without losing or inventing any on the way:
//
//   - Producer side, a transactional outbox: Append writes the event in the
//     same database transaction as the state change it reports, so the two
//     commit or roll back together. A Relay publishes committed rows to NATS
//     JetStream with the event id as Nats-Msg-Id and marks them published.
//     A crash between publishing and marking means a second publish, which
//     JetStream drops as a duplicate within its window (DuplicateWindow)
//     and the consumers' inbox after it; NATS being down means the rows
//     wait.
//   - Consumer side, an inbox: Consume runs a durable pull consumer that
//     acks what its handler accepted and redelivers what it did not; a
//     handler that calls Once in its own transaction applies each event
//     once however often it is delivered. StartInboxPurge keeps the inbox
//     to the ids JetStream could still deliver (DefaultInboxRetention),
//     as the relay keeps the outbox to a day of published rows.
//
// NATS itself runs embedded (StartServer: nats-server in process, JetStream
// files under a directory) or is an external server or cluster (Connect).
//
// Events travel with headers: Nats-Msg-Id (the event id), Duet-Event-Type
// (the protobuf full name), Duet-Aggregate-Id, Duet-Occur-Time (RFC 3339),
// the W3C traceparent and tracestate of the request that caused them, and
// x-request-id.
//
// The outbox and inbox tables (events_outbox, events_inbox) are created by
// Migrate in the service's own database. Services that share one database
// schema share them too, which is safe: every relay publishes every pending
// row, JetStream deduplicates, and so does each consumer's inbox; inbox rows
// are keyed by consumer.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names set on every published event.
const (
	HeaderMsgID       = jetstream.MsgIDHeader // "Nats-Msg-Id": the event id, for deduplication
	HeaderEventType   = "Duet-Event-Type"     // protobuf full name of the payload
	HeaderAggregateID = "Duet-Aggregate-Id"   // id of the entity the event is about
	HeaderOccurTime   = "Duet-Occur-Time"     // when the event was appended, in its change's transaction; RFC 3339, to the microsecond
	HeaderTraceParent = "traceparent"         // W3C trace context
	HeaderTraceState  = "tracestate"          // W3C trace context
	HeaderRequestID   = "x-request-id"        // kit/requestid of the request that caused the event
)

// Defaults for BusConfig.
const (
	DefaultStream = "DUET_EVENTS"
	DefaultPrefix = "duet"
	// DuplicateWindow is the default of BusConfig.Duplicates: how long
	// JetStream remembers event ids to drop re-publishes. It covers a
	// relay's own retries while NATS and the database answer (a publish
	// whose acknowledgement timed out is sent again within PublishTimeout
	// plus MaxBackoff, 15 s with the defaults) and relays sharing an
	// outbox, which mostly race within milliseconds. A re-publish after
	// longer (a process that crashed between publishing and marking and
	// took more than half a minute to come back; a connection lost with
	// the acknowledgement, or a database down when the row was to be
	// marked, for longer than that) reaches the consumers, whose inbox
	// (Once) drops it: the window saves work, it does not make delivery
	// exactly-once.
	//
	// Why not nats-server's two minutes: the server keeps every id of the
	// window in memory, in a map the collector scans, and lets go of
	// expired ones in batches (up to three windows' worth stay reachable).
	// With `duet up` taking 900 orders/s (1,800 events/s) for five
	// minutes, two minutes of ids grew the live heap to ~98 MB (~50 MB of
	// ids), each collection's mark phase to ~100 ms and RSS to 404 MB, and
	// the orders' p99 rose from 20 to 37 ms; with thirty seconds the live
	// heap stayed at 40-50 MB, RSS at ~220 MB and the p99 at 23 ms
	// (bench/README.md). Ten minutes, the earlier default, was worse
	// still: 60 ms and rising after 200 s.
	DuplicateWindow = 30 * time.Second
	// DefaultMaxAge is how long the stream keeps events; a consumer that is
	// down for longer misses the older ones.
	DefaultMaxAge = 7 * 24 * time.Hour
)

// BusConfig names the stream and subject prefix; zero values take defaults.
// Tests give each Bus its own so they can share one NATS server.
type BusConfig struct {
	// Stream is the JetStream stream name; default DefaultStream.
	Stream string
	// Prefix is prepended to every relative subject; default DefaultPrefix.
	Prefix string
	// MaxAge bounds how long the stream keeps events; default DefaultMaxAge.
	MaxAge time.Duration
	// Duplicates is how long JetStream remembers event ids to drop
	// re-publishes; default DuplicateWindow, or MaxAge if that is shorter.
	// The server holds in memory every id published within it. Longer
	// than MaxAge is an error.
	Duplicates time.Duration
}

// Bus is a JetStream stream holding every event under Prefix.
type Bus struct {
	// Conn is the NATS connection the Bus uses; its owner closes it.
	Conn *nats.Conn
	// JS is the JetStream API on Conn.
	JS jetstream.JetStream
	// Stream is the stream's name; Prefix its subject prefix.
	Stream, Prefix string
	// streamConfig is the stream as OpenBus created it, for a relay to
	// create it again should it be gone; nil on a Bus made otherwise.
	streamConfig *jetstream.StreamConfig
}

// OpenBus creates the stream, or updates it to the current configuration,
// and returns a Bus on it: subjects Prefix+".>", file storage, a
// deduplication window of cfg.Duplicates.
func OpenBus(ctx context.Context, nc *nats.Conn, cfg BusConfig) (*Bus, error) {
	if nc == nil {
		return nil, errors.New("events: OpenBus needs a NATS connection")
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	// JetStream refuses a window longer than the stream keeps events: the
	// default is capped, a window set by the caller is an error, checked
	// here because the server answers it with a 5xx code, which the loop
	// below would retry.
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = min(DuplicateWindow, cfg.MaxAge)
	} else if cfg.Duplicates > cfg.MaxAge {
		return nil, fmt.Errorf("events: BusConfig.Duplicates %v is longer than MaxAge %v", cfg.Duplicates, cfg.MaxAge)
	}
	if !validSubject(cfg.Prefix, false) {
		return nil, fmt.Errorf("events: invalid subject prefix %q", cfg.Prefix)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("events: JetStream: %w", err)
	}
	scfg := jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Duet domain events, published from the services' outboxes",
		Subjects:    []string{cfg.Prefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.MaxAge,
		Duplicates:  cfg.Duplicates,
	}
	// A server-side failure (API code 5xx, say the store could not be
	// created under load) is worth a few more tries; a refused
	// configuration is not.
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err = js.CreateOrUpdateStream(ctx, scfg)
		var apiErr *jetstream.APIError
		if err == nil || attempt == openBusAttempts || !errors.As(err, &apiErr) || apiErr.Code < 500 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
			delay *= 2
			continue
		}
		break
	}
	if err != nil {
		return nil, fmt.Errorf("events: create stream %s: %w", cfg.Stream, err)
	}
	return &Bus{Conn: nc, JS: js, Stream: cfg.Stream, Prefix: cfg.Prefix, streamConfig: &scfg}, nil
}

// restoreStream creates the stream as OpenBus did when the server has
// none, and reports whether it did. A stream the server has is left as
// it is: no stream answering a publish also happens while a cluster
// elects the stream's leader, and updating it then to OpenBus's
// configuration would undo an operator's changes (its replicas, say). A
// Bus not made by OpenBus restores nothing.
func (b *Bus) restoreStream(ctx context.Context) (created bool, err error) {
	if b.streamConfig == nil {
		return false, nil
	}
	if _, err := b.JS.Stream(ctx, b.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, err // there, or the server cannot say
	}
	_, err = b.JS.CreateStream(ctx, *b.streamConfig)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return false, nil // another process got there first
	}
	return err == nil, err
}

// recreateStream is restoreStream with its outcome logged to log, which a
// relay and a consumer that found the stream gone both want; it reports
// whether the stream was created.
func (b *Bus) recreateStream(ctx context.Context, log *slog.Logger) bool {
	created, err := b.restoreStream(ctx)
	switch {
	case err != nil:
		log.WarnContext(ctx, "events: the stream is gone, and creating it again failed", "stream", b.Stream, "err", err)
	case created:
		log.WarnContext(ctx, "events: the stream was gone; created it again", "stream", b.Stream)
	}
	return created
}

// openBusAttempts bounds OpenBus's tries after server-side failures.
const openBusAttempts = 4

// Subject turns a relative subject into the absolute one on this Bus:
// "order.confirmed" becomes "duet.order.confirmed".
func (b *Bus) Subject(rel string) string { return b.Prefix + "." + rel }

// relative strips the Bus prefix from an absolute subject.
func (b *Bus) relative(subject string) string {
	if rel, ok := strings.CutPrefix(subject, b.Prefix+"."); ok {
		return rel
	}
	return subject
}

// validSubject reports whether s is a well-formed relative subject: tokens
// separated by single dots, no whitespace, and wildcards (* and a final >)
// only when wildcards is true.
func validSubject(s string, wildcards bool) bool {
	if s == "" {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, tok := range tokens {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
			return false
		}
		if tok == "*" || (tok == ">" && i == len(tokens)-1) {
			if !wildcards {
				return false
			}
			continue
		}
		if strings.ContainsAny(tok, "*>") {
			return false
		}
	}
	return true
}
