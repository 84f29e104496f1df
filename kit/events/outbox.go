package events

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"

	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/sqldb"
)

// MigrationTable is the goose version table of the outbox and inbox
// tables, separate from the service's own.
const MigrationTable = "events_goose_db_version"

// migrations holds one directory per dialect: the outbox's sequence column
// and its payload type are spelt differently in SQLite and PostgreSQL.
//
//go:embed migrations
var migrations embed.FS

// Migrate creates or upgrades the outbox and inbox tables in db.
func Migrate(ctx context.Context, db *sqldb.DB) error {
	dir, err := fs.Sub(migrations, "migrations/"+string(db.Dialect))
	if err != nil {
		return fmt.Errorf("events: migrations for %s: %w", db.Dialect, err)
	}
	if err := db.Migrate(ctx, dir, MigrationTable); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

// Event is one domain event to append to the outbox.
type Event struct {
	// Subject is relative to the Bus prefix, for example "order.confirmed".
	Subject string
	// AggregateID is the id of the entity the event is about.
	AggregateID string
	// Message is the event itself, a protobuf message from proto/.
	Message proto.Message
}

// traceContext is the W3C propagator for outbox headers. It is used
// directly rather than through otel's global propagator so events carry
// trace context however (or whether) the process set tracing up.
var traceContext = propagation.TraceContext{}

// Append writes ev to the outbox in tx, the caller's transaction, and returns
// the new event's id (a UUIDv7). The row commits or rolls back with the state
// change it reports. The trace context and request id of ctx go with it.
//
// Call Relay.Notify after committing tx to publish without waiting for the
// relay's next poll.
func Append(ctx context.Context, tx *sql.Tx, dialect sqldb.Dialect, ev Event) (string, error) {
	if !validSubject(ev.Subject, false) {
		return "", fmt.Errorf("events: invalid subject %q", ev.Subject)
	}
	if ev.Message == nil {
		return "", errors.New("events: event without a message")
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev.Message)
	if err != nil {
		return "", fmt.Errorf("events: marshal %s: %w", ev.Subject, err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("events: event id: %w", err)
	}
	headers := propagation.MapCarrier{}
	traceContext.Inject(ctx, headers)
	if rid := requestid.FromContext(ctx); rid != "" {
		headers[HeaderRequestID] = rid
	}
	hdrJSON, err := json.Marshal(headers)
	if err != nil {
		return "", fmt.Errorf("events: headers: %w", err)
	}
	// The relay sends the headers too: the trace context (a tracestate
	// may run to kilobytes), the request id, the aggregate id and type.
	typ := string(proto.MessageName(ev.Message))
	size := len(payload) + len(hdrJSON) + len(ev.AggregateID) + len(typ) + fixedHeaderBytes
	if size > MaxPayload {
		return "", fmt.Errorf("events: %s is %d bytes with its headers, over MaxPayload (%d)", ev.Subject, size, MaxPayload)
	}
	_, err = tx.ExecContext(ctx, sqldb.Rebind(dialect,
		`INSERT INTO events_outbox (id, subject, type, aggregate_id, payload, headers, occur_time)
		 VALUES (?, ?, ?, ?, ?, ?, ?)`),
		id.String(), ev.Subject, typ, ev.AggregateID,
		payload, string(hdrJSON), time.Now().UnixMicro())
	if err != nil {
		return "", fmt.Errorf("events: append %s: %w", ev.Subject, err)
	}
	return id.String(), nil
}

// MaxPayload bounds an event as the relay sends it, its encoded message
// and headers together, in bytes: nats-server's default max_payload (1 MiB,
// headers included). A larger event would be refused by the server at
// every publish, and the relay, which publishes in order and never skips
// one, would hold every later event behind it; Append refuses it instead,
// in the transaction of the change it reports. A server configured with a
// smaller max_payload needs events smaller than that.
const MaxPayload = 1 << 20

// fixedHeaderBytes is room for the headers of every event whose size does
// not vary (names, the event id, the occur time, NATS's framing).
const fixedHeaderBytes = 512

// Once records in tx, the caller's transaction, that consumer has processed
// the event eventID, and reports whether this is the first time. When it is
// not, the caller skips the event's effect (and still lets Consume ack it).
// Because the record commits or rolls back with the effect, an event whose
// handling failed is not marked, and its redelivery is processed afresh.
func Once(ctx context.Context, tx *sql.Tx, dialect sqldb.Dialect, consumer, eventID string) (bool, error) {
	if consumer == "" || eventID == "" {
		return false, errors.New("events: Once needs a consumer name and an event id")
	}
	res, err := tx.ExecContext(ctx, sqldb.Rebind(dialect,
		`INSERT INTO events_inbox (consumer, event_id, processed_time) VALUES (?, ?, ?)
		 ON CONFLICT (consumer, event_id) DO NOTHING`),
		consumer, eventID, time.Now().UnixMicro())
	if err != nil {
		return false, fmt.Errorf("events: inbox: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("events: inbox: %w", err)
	}
	return n == 1, nil
}
