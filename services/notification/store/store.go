// Package store keeps notifications and the audit log in SQL (SQLite or
// PostgreSQL through kit/sqldb) and implements domain.Repository. The inbox
// that makes event handling idempotent is kit/events' events_inbox, written
// in the same transaction as the effects.
package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/notification/domain"
)

// migrations holds one directory per dialect: the audit log's append-only
// triggers and its payload column type are spelt differently in SQLite and
// PostgreSQL.
//
//go:embed migrations
var migrations embed.FS

// Migrations returns the goose migrations that create the store's tables in
// dialect.
func Migrations(dialect sqldb.Dialect) (fs.FS, error) {
	sub, err := fs.Sub(migrations, "migrations/"+string(dialect))
	if err != nil {
		return nil, fmt.Errorf("store: migrations for %s: %w", dialect, err)
	}
	return sub, nil
}

// MigrationTable is the goose version table of the notification service, so
// it can share a database with other services.
const MigrationTable = "notification_goose_db_version"

// Inbox is the consumer name under which processed events are recorded in
// events_inbox.
const Inbox = "notification"

// Open opens the database at url and brings its schema up to date: the
// store's own tables (version table MigrationTable) and kit/events' inbox.
// opts are sqldb.Open's (sqldb.WithLogger for the migrations' log).
func Open(ctx context.Context, url string, opts ...sqldb.Option) (*sqldb.DB, error) {
	// The migrations depend on the dialect, known once the URL is parsed,
	// so they run after sqldb.Open rather than through it.
	db, err := sqldb.Open(ctx, url, nil, opts...)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

func migrate(ctx context.Context, db *sqldb.DB) error {
	fsys, err := Migrations(db.Dialect)
	if err != nil {
		return err
	}
	if err := db.Migrate(ctx, fsys, MigrationTable); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return events.Migrate(ctx, db)
}

// Store is the SQL notification repository.
type Store struct {
	db *sqldb.DB

	insertEvent, insertNote         string
	notes, notesAfter, unacked, ack string
	events, eventsAfter             string
}

var _ domain.Repository = (*Store)(nil)

// New returns a Store over db, whose schema Open has migrated.
func New(db *sqldb.DB) *Store {
	const (
		noteColumns  = "id, user_id, kind, title, body, subject_id, event_id, create_time, ack_time"
		eventColumns = "event_id, type, aggregate_id, subject, request_id, trace_id, occur_time, record_time, payload"
	)
	s := &Store{db: db}
	s.insertEvent = db.Rebind("INSERT INTO audit_events (" + eventColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
	s.insertNote = db.Rebind("INSERT INTO notifications (" + noteColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)")
	s.notes = db.Rebind("SELECT " + noteColumns + " FROM notifications WHERE user_id = ? ORDER BY create_time, id LIMIT ?")
	s.notesAfter = db.Rebind("SELECT " + noteColumns + " FROM notifications WHERE user_id = ? AND (create_time, id) > (?, ?) ORDER BY create_time, id LIMIT ?")
	s.unacked = db.Rebind("SELECT " + noteColumns + " FROM notifications WHERE user_id = ? AND ack_time IS NULL ORDER BY create_time, id LIMIT ?")
	s.ack = db.Rebind("UPDATE notifications SET ack_time = ? WHERE id = ? AND user_id = ? AND ack_time IS NULL")
	s.events = db.Rebind("SELECT " + eventColumns + " FROM audit_events WHERE aggregate_id = ? ORDER BY record_time, event_id LIMIT ?")
	s.eventsAfter = db.Rebind("SELECT " + eventColumns + " FROM audit_events WHERE aggregate_id = ? AND (record_time, event_id) > (?, ?) ORDER BY record_time, event_id LIMIT ?")
	return s
}

// Record claims ev.ID in the inbox, appends ev to the audit log and stores n
// (when not nil), in one transaction: RecordAll for one entry.
func (s *Store) Record(ctx context.Context, ev domain.Event, n *domain.Notification) (bool, error) {
	first, err := s.RecordAll(ctx, []domain.Entry{{Event: ev, Notification: n}})
	if err != nil {
		return false, err
	}
	return first[0], nil
}

// RecordAll records every entry as Record does, all in one transaction;
// see domain.Repository.
func (s *Store) RecordAll(ctx context.Context, entries []domain.Entry) ([]bool, error) {
	first := make([]bool, len(entries))
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		for i, e := range entries {
			var err error
			if first[i], err = s.record(ctx, tx, e.Event, e.Notification); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return first, nil
}

// record claims ev.ID in the inbox and, the first time, appends ev to the
// audit log and stores n (when not nil), in tx.
func (s *Store) record(ctx context.Context, tx *sql.Tx, ev domain.Event, n *domain.Notification) (bool, error) {
	first, err := events.Once(ctx, tx, s.db.Dialect, Inbox, ev.ID)
	if err != nil || !first {
		return false, err
	}
	payload := ev.Payload
	if payload == nil {
		payload = []byte{} // an empty message is valid protobuf; NULL is not a payload
	}
	if _, err := tx.ExecContext(ctx, s.insertEvent, ev.ID, ev.Type, ev.AggregateID, ev.Subject,
		ev.RequestID, ev.TraceID, micros(ev.OccurTime), micros(ev.RecordTime), payload); err != nil {
		return false, fmt.Errorf("store: append audit event: %w", err)
	}
	if n != nil {
		if _, err := tx.ExecContext(ctx, s.insertNote, n.ID, n.UserID, string(n.Kind), n.Title, n.Body,
			n.SubjectID, n.EventID, micros(n.CreateTime)); err != nil {
			return false, fmt.Errorf("store: insert notification: %w", err)
		}
	}
	return true, nil
}

// Notifications returns up to limit notifications of userID after pos,
// ordered by (create_time, id).
func (s *Store) Notifications(ctx context.Context, userID string, after *domain.Position, limit int) ([]domain.Notification, error) {
	if after == nil {
		return s.queryNotes(ctx, s.notes, userID, limit)
	}
	return s.queryNotes(ctx, s.notesAfter, userID, after.Time.UnixMicro(), after.ID, limit)
}

// Unacked returns up to limit unacknowledged notifications of userID,
// ordered by (create_time, id).
func (s *Store) Unacked(ctx context.Context, userID string, limit int) ([]domain.Notification, error) {
	return s.queryNotes(ctx, s.unacked, userID, limit)
}

// Ack sets the ack time of notification id when it belongs to userID and is
// not acknowledged yet.
func (s *Store) Ack(ctx context.Context, userID, id string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.ack, at.UnixMicro(), id, userID); err != nil {
		return fmt.Errorf("store: ack notification: %w", err)
	}
	return nil
}

// Events returns up to limit audit log entries of aggregateID after pos,
// ordered by (record_time, event_id).
func (s *Store) Events(ctx context.Context, aggregateID string, after *domain.Position, limit int) ([]domain.Event, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if after == nil {
		rows, err = s.db.QueryContext(ctx, s.events, aggregateID, limit)
	} else {
		rows, err = s.db.QueryContext(ctx, s.eventsAfter, aggregateID, after.Time.UnixMicro(), after.ID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: list audit events: %w", err)
	}
	defer rows.Close()
	out := make([]domain.Event, 0, min(limit, 128))
	for rows.Next() {
		var (
			ev                    domain.Event
			occurTime, recordTime int64
		)
		if err := rows.Scan(&ev.ID, &ev.Type, &ev.AggregateID, &ev.Subject, &ev.RequestID, &ev.TraceID,
			&occurTime, &recordTime, &ev.Payload); err != nil {
			return nil, fmt.Errorf("store: read audit event: %w", err)
		}
		ev.OccurTime = fromMicros(occurTime)
		ev.RecordTime = fromMicros(recordTime)
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list audit events: %w", err)
	}
	return out, nil
}

func (s *Store) queryNotes(ctx context.Context, query string, args ...any) ([]domain.Notification, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list notifications: %w", err)
	}
	defer rows.Close()
	var out []domain.Notification
	for rows.Next() {
		var (
			n          domain.Notification
			kind       string
			createTime int64
			ackTime    sql.NullInt64
		)
		if err := rows.Scan(&n.ID, &n.UserID, &kind, &n.Title, &n.Body, &n.SubjectID, &n.EventID, &createTime, &ackTime); err != nil {
			return nil, fmt.Errorf("store: read notification: %w", err)
		}
		n.Kind = domain.Kind(kind)
		n.CreateTime = fromMicros(createTime)
		if ackTime.Valid {
			n.AckTime = fromMicros(ackTime.Int64)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list notifications: %w", err)
	}
	return out, nil
}

// micros stores t as unix microseconds; the zero time (an event without an
// occur time) is stored as 0 and read back as the zero time.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
