// Package store keeps orders and their items in SQL (SQLite or PostgreSQL,
// through kit/sqldb). It implements domain.Repository.
package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"log/slog"
	"strings"
	"time"

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

// Store is the SQL implementation of domain.Repository.
type Store struct {
	db *sqldb.DB
}

var _ domain.Repository = (*Store)(nil)

// Open connects to the database at url (see sqldb.Open), applies the order
// migrations and returns the store. logger receives the migration log; nil
// keeps it quiet.
func Open(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	opts := []sqldb.Option{sqldb.WithMigrationTable(MigrationTable)}
	if logger != nil {
		opts = append(opts, sqldb.WithLogger(logger))
	}
	db, err := sqldb.Open(ctx, url, migrations, opts...)
	if err != nil {
		return nil, fmt.Errorf("order store: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

const orderColumns = `id, user_id, idempotency_key, fingerprint, currency, total_units,
	status, payment_id, failure_reason, create_time, update_time`

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Create implements domain.Repository: the order and its items in one
// transaction, so no order is ever seen without its items.
func (s *Store) Create(ctx context.Context, o *domain.Order) error {
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO orders (`+orderColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			o.ID, o.UserID, o.IdempotencyKey, o.Fingerprint, o.Total.Currency, o.Total.Units,
			string(o.Status), o.PaymentID, o.FailureReason, micros(o.CreateTime), micros(o.UpdateTime))
		if err != nil {
			return err
		}
		for i, it := range o.Items {
			if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO order_items
				(order_id, line, sku, quantity, unit_units) VALUES (?, ?, ?, ?, ?)`),
				o.ID, i, it.SKU, it.Quantity, it.UnitPrice.Units); err != nil {
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
func (s *Store) ByIdempotencyKey(ctx context.Context, key string) (*domain.Order, error) {
	return s.one(ctx, `SELECT `+orderColumns+` FROM orders WHERE idempotency_key = ?`, key)
}

// one reads a single order with its items. No transaction is needed: items
// are written with their order and never change.
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

// Update implements domain.Repository. The row is locked for the
// transaction (FOR UPDATE on PostgreSQL; SQLite transactions begin
// IMMEDIATE), so changes to one order are applied one at a time.
func (s *Store) Update(ctx context.Context, id string, change func(*domain.Order) error) (*domain.Order, error) {
	var out *domain.Order
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		query := `SELECT ` + orderColumns + ` FROM orders WHERE id = ?`
		if s.db.Dialect == sqldb.Postgres {
			query += ` FOR UPDATE`
		}
		orders, err := s.list(ctx, tx, query, id)
		if err != nil {
			return err
		}
		if len(orders) == 0 {
			return domain.ErrNotFound
		}
		o := orders[0]
		if err := change(o); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE orders
			SET status = ?, payment_id = ?, failure_reason = ?, update_time = ? WHERE id = ?`),
			string(o.Status), o.PaymentID, o.FailureReason, micros(o.UpdateTime), o.ID); err != nil {
			return fmt.Errorf("update order: %w", err)
		}
		out = o
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeletePending implements domain.Repository.
func (s *Store) DeletePending(ctx context.Context, id string) error {
	return s.db.InTx(ctx, func(tx *sql.Tx) error {
		// Items go first explicitly rather than through ON DELETE CASCADE,
		// which SQLite only honours with foreign_keys on.
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM order_items WHERE order_id IN
			(SELECT id FROM orders WHERE id = ? AND status = ?)`), id, string(domain.StatusPending)); err != nil {
			return fmt.Errorf("delete order items: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM orders WHERE id = ? AND status = ?`),
			id, string(domain.StatusPending)); err != nil {
			return fmt.Errorf("delete order: %w", err)
		}
		return nil
	})
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
			o                      domain.Order
			status                 string
			createTime, updateTime int64
		)
		if err := rows.Scan(&o.ID, &o.UserID, &o.IdempotencyKey, &o.Fingerprint, &o.Total.Currency, &o.Total.Units,
			&status, &o.PaymentID, &o.FailureReason, &createTime, &updateTime); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read orders: %w", err)
		}
		o.Status = domain.Status(status)
		o.CreateTime, o.UpdateTime = fromMicros(createTime), fromMicros(updateTime)
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
	rows, err = q.QueryContext(ctx, s.db.Rebind(`SELECT order_id, sku, quantity, unit_units FROM order_items
		WHERE order_id IN (`+placeholders+`) ORDER BY order_id, line`), ids...)
	if err != nil {
		return nil, fmt.Errorf("read order items: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			orderID string
			it      domain.LineItem
		)
		if err := rows.Scan(&orderID, &it.SKU, &it.Quantity, &it.UnitPrice.Units); err != nil {
			return nil, fmt.Errorf("read order items: %w", err)
		}
		o := byID[orderID]
		it.UnitPrice.Currency = o.Total.Currency
		o.Items = append(o.Items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read order items: %w", err)
	}
	return out, nil
}

// micros and fromMicros convert times to and from the stored unix microseconds.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
