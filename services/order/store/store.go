// Package store keeps orders, their items and their sagas' state in SQL
// (SQLite or PostgreSQL, through kit/sqldb), with the outbox of the events
// that announce their outcomes (kit/events). It implements domain.Repository.
package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/order/domain"
)

// migrations holds the schema, applied by Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// MigrationTable is the goose version table of the order service, distinct
// from other services' so they may share a database.
const MigrationTable = "order_goose_db_version"

// Options configure a Store.
type Options struct {
	// Logger receives the migration log; nil keeps it quiet.
	Logger *slog.Logger
	// Event returns the event announcing o, which has just become terminal;
	// Save appends it to the outbox in the transaction that stores o. Nil
	// appends nothing.
	Event func(o *domain.Order) events.Event
}

// Store is the SQL implementation of domain.Repository.
type Store struct {
	db       *sqldb.DB
	event    func(o *domain.Order) events.Event
	appended func()
}

var _ domain.Repository = (*Store)(nil)

// Open connects to the database at url (see sqldb.Open), applies the order
// migrations and the outbox's (events.Migrate), and returns the store.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	sqlOpts := []sqldb.Option{sqldb.WithMigrationTable(MigrationTable)}
	if opts.Logger != nil {
		sqlOpts = append(sqlOpts, sqldb.WithLogger(opts.Logger))
	}
	db, err := sqldb.Open(ctx, url, migrations, sqlOpts...)
	if err != nil {
		return nil, fmt.Errorf("order store: %w", err)
	}
	if err := events.Migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("order store: %w", err)
	}
	return &Store{db: db, event: opts.Event}, nil
}

// DB returns the database, for the outbox relay.
func (s *Store) DB() *sqldb.DB { return s.db }

// OnAppend sets f to be called after every committed transaction that
// appended an event (Relay.Notify, so events go out at once). Call it
// before the store is used concurrently.
func (s *Store) OnAppend(f func()) { s.appended = f }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

const orderColumns = `id, user_id, idempotency_key, fingerprint, payment_token, request_id, trace_parent, currency, total_units,
	status, step, failed_step, attempts, next_attempt_time, step_deadline, last_error, payment_id, failure_reason,
	version, create_time, update_time, charge_secret`

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Create implements domain.Repository: the order and its items in one
// transaction, so no order is ever seen without its items.
func (s *Store) Create(ctx context.Context, o *domain.Order) error {
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO orders (`+orderColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			o.ID, o.UserID, o.IdempotencyKey, o.Fingerprint, o.PaymentToken, o.RequestID, o.TraceParent, o.Total.Currency, o.Total.Units,
			string(o.Status), string(o.Step), string(o.FailedStep), o.Attempts, micros(o.NextAttempt), micros(o.StepDeadline),
			o.LastError, o.PaymentID, o.FailureReason, o.Version, micros(o.CreateTime), micros(o.UpdateTime), o.ChargeSecret)
		if err != nil {
			return err
		}
		for i, it := range o.Items {
			var expected domain.Money
			if it.Expected != nil {
				expected = *it.Expected
			}
			if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO order_items
				(order_id, line, sku, quantity, unit_units, expected_currency, expected_units) VALUES (?, ?, ?, ?, ?, ?, ?)`),
				o.ID, i, it.SKU, it.Quantity, it.UnitPrice.Units, expected.Currency, expected.Units); err != nil {
				return err
			}
		}
		return nil
	})
	if sqldb.IsUniqueViolation(err) {
		return domain.ErrDuplicate
	}
	if err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	return nil
}

// ByID implements domain.Repository.
func (s *Store) ByID(ctx context.Context, id string) (*domain.Order, error) {
	return s.one(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ?`, id)
}

// ByIdempotencyKey implements domain.Repository.
func (s *Store) ByIdempotencyKey(ctx context.Context, userID, key string) (*domain.Order, error) {
	return s.one(ctx, `SELECT `+orderColumns+` FROM orders WHERE user_id = ? AND idempotency_key = ?`, userID, key)
}

// one reads a single order with its items.
func (s *Store) one(ctx context.Context, query string, args ...any) (*domain.Order, error) {
	orders, err := s.list(ctx, s.db, query, args...)
	if err != nil {
		return nil, err
	}
	if len(orders) == 0 {
		return nil, domain.ErrNotFound
	}
	return orders[0], nil
}

// Save implements domain.Repository. The version check in the UPDATE is
// what serialises sagas: of two runners that computed a change from the
// same version, one stores it and the other gets ErrConflict.
func (s *Store) Save(ctx context.Context, o *domain.Order, from int64, pricesChanged bool) error {
	appended := false
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE orders SET currency = ?, total_units = ?, status = ?, step = ?,
			failed_step = ?, attempts = ?, next_attempt_time = ?, step_deadline = ?, last_error = ?, payment_id = ?,
			failure_reason = ?, version = ?, update_time = ? WHERE id = ? AND version = ?`),
			o.Total.Currency, o.Total.Units, string(o.Status), string(o.Step), string(o.FailedStep), o.Attempts,
			micros(o.NextAttempt), micros(o.StepDeadline), o.LastError, o.PaymentID, o.FailureReason, o.Version,
			micros(o.UpdateTime), o.ID, from)
		if err != nil {
			return fmt.Errorf("update order: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("update order: %w", err)
		}
		if n == 0 {
			return domain.ErrConflict
		}
		if pricesChanged {
			for i, it := range o.Items {
				if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE order_items SET unit_units = ?
					WHERE order_id = ? AND line = ?`), it.UnitPrice.Units, o.ID, i); err != nil {
					return fmt.Errorf("update order items: %w", err)
				}
			}
		}
		if o.Status.Terminal() && s.event != nil {
			if _, err := events.Append(ctx, tx, s.db.Dialect, s.event(o)); err != nil {
				return fmt.Errorf("append order event: %w", err)
			}
			appended = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if appended && s.appended != nil {
		s.appended()
	}
	return nil
}

// Pending implements domain.Repository, as one range scan of the partial
// index on unfinished orders.
func (s *Store) Pending(ctx context.Context, due time.Time, limit int) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT id FROM orders
		WHERE status = ? AND next_attempt_time <= ? ORDER BY next_attempt_time, id LIMIT ?`),
		string(domain.StatusPending), micros(due), limit)
	if err != nil {
		return nil, fmt.Errorf("read pending orders: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read pending orders: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending orders: %w", err)
	}
	return ids, nil
}

// ListByUser implements domain.Repository, as one range scan of the
// (user_id, create_time, id) index.
func (s *Store) ListByUser(ctx context.Context, userID string, after *domain.Position, limit int) ([]*domain.Order, error) {
	query := `SELECT ` + orderColumns + ` FROM orders WHERE user_id = ?`
	args := []any{userID}
	if after != nil {
		query += ` AND (create_time > ? OR (create_time = ? AND id > ?))`
		t := micros(after.CreateTime)
		args = append(args, t, t, after.ID)
	}
	query += ` ORDER BY create_time, id LIMIT ?`
	args = append(args, limit)
	return s.list(ctx, s.db, query, args...)
}

// list runs query, which selects orderColumns, and loads the items of the
// orders it returns with one more query. The first result set is closed
// before the second query runs: on SQLite the pool has one connection.
//
// The two queries run outside a transaction: items are written with their
// order and only their prices change after, by Save, in the transaction
// that moves the order past PRICE; an order read between the two queries
// may show prices one step ahead of its status, never inconsistent ones.
func (s *Store) list(ctx context.Context, q queryer, query string, args ...any) ([]*domain.Order, error) {
	rows, err := q.QueryContext(ctx, s.db.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	var (
		out  []*domain.Order
		byID = map[string]*domain.Order{}
	)
	for rows.Next() {
		var (
			o                              domain.Order
			status, step, failedStep       string
			next, deadline, create, update int64
		)
		if err := rows.Scan(&o.ID, &o.UserID, &o.IdempotencyKey, &o.Fingerprint, &o.PaymentToken, &o.RequestID, &o.TraceParent,
			&o.Total.Currency, &o.Total.Units, &status, &step, &failedStep, &o.Attempts, &next, &deadline,
			&o.LastError, &o.PaymentID, &o.FailureReason, &o.Version, &create, &update, &o.ChargeSecret); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read orders: %w", err)
		}
		o.Status, o.Step, o.FailedStep = domain.Status(status), domain.Step(step), domain.Step(failedStep)
		o.NextAttempt, o.StepDeadline = fromMicros(next), fromMicros(deadline)
		o.CreateTime, o.UpdateTime = fromMicros(create), fromMicros(update)
		out = append(out, &o)
		byID[o.ID] = &o
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return nil, fmt.Errorf("read orders: %w", err)
	}
	rows.Close()
	if len(out) == 0 {
		return nil, nil
	}

	ids := make([]any, len(out))
	for i, o := range out {
		ids[i] = o.ID
	}
	placeholders := strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ")
	rows, err = q.QueryContext(ctx, s.db.Rebind(`SELECT order_id, sku, quantity, unit_units, expected_currency, expected_units
		FROM order_items WHERE order_id IN (`+placeholders+`) ORDER BY order_id, line`), ids...)
	if err != nil {
		return nil, fmt.Errorf("read order items: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			orderID  string
			it       domain.LineItem
			expected domain.Money
		)
		if err := rows.Scan(&orderID, &it.SKU, &it.Quantity, &it.UnitPrice.Units, &expected.Currency, &expected.Units); err != nil {
			return nil, fmt.Errorf("read order items: %w", err)
		}
		o := byID[orderID]
		if o.Priced() {
			it.UnitPrice.Currency = o.Total.Currency
		} else {
			it.UnitPrice = domain.Money{}
		}
		if expected.Currency != "" {
			it.Expected = &expected
		}
		o.Items = append(o.Items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read order items: %w", err)
	}
	return out, nil
}

// micros and fromMicros convert times to and from the stored unix
// microseconds; the zero time is stored as 0.
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
