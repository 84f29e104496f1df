// Package store keeps payments and refunds in SQL (SQLite or PostgreSQL,
// through kit/sqldb). It implements domain.Repository.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/payment/domain"
)

// migrations holds the schema, applied by Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// MigrationTable is the goose version table of the payment service, distinct
// from other services' so they may share a database.
const MigrationTable = "payment_goose_db_version"

// Store is the SQL implementation of domain.Repository.
type Store struct {
	db *sqldb.DB
}

var _ domain.Repository = (*Store)(nil)

// Open connects to the database at url (see sqldb.Open), applies the
// payment migrations and returns the store. logger receives the migration
// log; nil keeps it quiet.
func Open(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	opts := []sqldb.Option{sqldb.WithMigrationTable(MigrationTable)}
	if logger != nil {
		opts = append(opts, sqldb.WithLogger(logger))
	}
	db, err := sqldb.Open(ctx, url, migrations, opts...)
	if err != nil {
		return nil, fmt.Errorf("payment store: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

const paymentColumns = `id, idempotency_key, fingerprint, currency, amount_units, refunded_units,
	status, decline_reason, reference, create_time, update_time`

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Create implements domain.Repository.
func (s *Store) Create(ctx context.Context, p *domain.Payment) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO payments (`+paymentColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		p.ID, p.IdempotencyKey, p.Fingerprint, p.Amount.Currency, p.Amount.Units, p.RefundedUnits,
		string(p.Status), p.DeclineReason, p.Reference, micros(p.CreateTime), micros(p.UpdateTime))
	if sqldb.IsUniqueViolation(err) {
		return domain.ErrDuplicate
	}
	if err != nil {
		return fmt.Errorf("insert payment: %w", err)
	}
	return nil
}

// ByID implements domain.Repository.
func (s *Store) ByID(ctx context.Context, id string) (*domain.Payment, error) {
	return s.one(ctx, s.db, `SELECT `+paymentColumns+` FROM payments WHERE id = ?`, id)
}

// ByIdempotencyKey implements domain.Repository.
func (s *Store) ByIdempotencyKey(ctx context.Context, key string) (*domain.Payment, error) {
	return s.one(ctx, s.db, `SELECT `+paymentColumns+` FROM payments WHERE idempotency_key = ?`, key)
}

// one reads a single payment, mapping "no rows" to domain.ErrNotFound.
func (s *Store) one(ctx context.Context, q querier, query string, args ...any) (*domain.Payment, error) {
	var (
		p                      domain.Payment
		status                 string
		createTime, updateTime int64
	)
	err := q.QueryRowContext(ctx, s.db.Rebind(query), args...).Scan(
		&p.ID, &p.IdempotencyKey, &p.Fingerprint, &p.Amount.Currency, &p.Amount.Units, &p.RefundedUnits,
		&status, &p.DeclineReason, &p.Reference, &createTime, &updateTime)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read payment: %w", err)
	}
	p.Status = domain.Status(status)
	p.CreateTime, p.UpdateTime = fromMicros(createTime), fromMicros(updateTime)
	return &p, nil
}

// Refund implements domain.Repository. The payment row is locked for the
// transaction (SELECT … FOR UPDATE on PostgreSQL; SQLite transactions begin
// IMMEDIATE and so already exclude other writers), and the update is a
// compare-and-set on refunded_units besides: even without the lock, two
// racing refunds could not both apply to the same prior state.
func (s *Store) Refund(ctx context.Context, id, refundKey string, apply func(*domain.Payment, *domain.Refund) (*domain.Refund, error)) (*domain.Payment, error) {
	var out *domain.Payment
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		query := `SELECT ` + paymentColumns + ` FROM payments WHERE id = ?`
		if s.db.Dialect == sqldb.Postgres {
			query += ` FOR UPDATE`
		}
		p, err := s.one(ctx, tx, query, id)
		if err != nil {
			return err
		}
		var prior *domain.Refund
		if refundKey != "" {
			if prior, err = s.refundByKey(ctx, tx, id, refundKey); err != nil {
				return err
			}
		}
		before := p.RefundedUnits
		r, err := apply(p, prior)
		if err != nil {
			return err
		}
		if r == nil {
			out = p
			return nil
		}
		_, err = tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO refunds
			(id, payment_id, units, requested_units, idempotency_key, create_time) VALUES (?, ?, ?, ?, ?, ?)`),
			r.ID, r.PaymentID, r.Units, r.RequestedUnits, r.IdempotencyKey, micros(r.CreateTime))
		if sqldb.IsUniqueViolation(err) {
			return domain.ErrDuplicate
		}
		if err != nil {
			return fmt.Errorf("insert refund: %w", err)
		}
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE payments
			SET refunded_units = ?, status = ?, update_time = ?
			WHERE id = ? AND refunded_units = ? AND ? <= amount_units`),
			p.RefundedUnits, string(p.Status), micros(p.UpdateTime), p.ID, before, p.RefundedUnits)
		if err != nil {
			return fmt.Errorf("update payment: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("update payment: %w", err)
		} else if n != 1 {
			return domain.ErrConflict
		}
		out = p
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// refundByKey returns the refund of payment id recorded under key, or nil.
func (s *Store) refundByKey(ctx context.Context, tx *sql.Tx, id, key string) (*domain.Refund, error) {
	var (
		r          domain.Refund
		createTime int64
	)
	err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT id, payment_id, units, requested_units, idempotency_key, create_time
		FROM refunds WHERE payment_id = ? AND idempotency_key = ?`), id, key).Scan(
		&r.ID, &r.PaymentID, &r.Units, &r.RequestedUnits, &r.IdempotencyKey, &createTime)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read refund: %w", err)
	}
	r.CreateTime = fromMicros(createTime)
	return &r, nil
}

// Refunds returns the refunds of payment id, oldest first. The domain does
// not need it; it lets tests and operators audit refunds against the total.
func (s *Store) Refunds(ctx context.Context, id string) ([]domain.Refund, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT id, payment_id, units, requested_units, idempotency_key, create_time
		FROM refunds WHERE payment_id = ? ORDER BY create_time, id`), id)
	if err != nil {
		return nil, fmt.Errorf("list refunds: %w", err)
	}
	defer rows.Close()
	var out []domain.Refund
	for rows.Next() {
		var (
			r          domain.Refund
			createTime int64
		)
		if err := rows.Scan(&r.ID, &r.PaymentID, &r.Units, &r.RequestedUnits, &r.IdempotencyKey, &createTime); err != nil {
			return nil, fmt.Errorf("list refunds: %w", err)
		}
		r.CreateTime = fromMicros(createTime)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list refunds: %w", err)
	}
	return out, nil
}

// micros and fromMicros convert times to and from the stored unix microseconds.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
