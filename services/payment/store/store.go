// Package store keeps payments and refunds in SQL (SQLite or PostgreSQL,
// through kit/sqldb). It implements domain.Repository, and writes the events
// reporting each change to the kit/events outbox in the change's own
// transaction.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/wire"
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
	// appended, when set, is called after a transaction that appended
	// events commits (to wake the relay).
	appended func()
}

var _ domain.Repository = (*Store)(nil)

// Open connects to the database at url (see sqldb.Open), applies the
// payment migrations and the kit/events outbox migrations, and returns the
// store. logger receives the migration log; nil keeps it quiet.
func Open(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	opts := []sqldb.Option{sqldb.WithMigrationTable(MigrationTable)}
	if logger != nil {
		opts = append(opts, sqldb.WithLogger(logger))
	}
	db, err := sqldb.Open(ctx, url, migrations, opts...)
	if err != nil {
		return nil, fmt.Errorf("payment store: %w", err)
	}
	if err := events.Migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("payment store: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// DB is the store's database, for the outbox relay.
func (s *Store) DB() *sqldb.DB { return s.db }

// OnAppend makes the store call f after each commit that appended events,
// typically events.Relay.Notify. Call it before the store is used.
func (s *Store) OnAppend(f func()) { s.appended = f }

// inTx runs fn in a transaction and, when it committed events, calls the
// OnAppend hook.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) (appended bool, err error)) error {
	var appended bool
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		appended, err = fn(tx)
		return err
	})
	if err == nil && appended && s.appended != nil {
		s.appended()
	}
	return err
}

// appendEvents writes evs to the outbox in tx.
func (s *Store) appendEvents(ctx context.Context, tx *sql.Tx, evs []domain.Event) error {
	for _, e := range evs {
		ev, err := wire.Event(e)
		if err != nil {
			return err
		}
		if _, err := events.Append(ctx, tx, s.db.Dialect, ev); err != nil {
			return err
		}
	}
	return nil
}

// lockKey serialises, on PostgreSQL, the transactions that decide whether an
// idempotency key is charged or cancelled, until tx ends. Otherwise a charge
// and a cancel of one key could each see the other absent and both commit.
// SQLite transactions begin IMMEDIATE and so are serialised already.
func (s *Store) lockKey(ctx context.Context, tx *sql.Tx, key string) error {
	if s.db.Dialect != sqldb.Postgres {
		return nil
	}
	h := fnv.New64a()
	_, _ = io.WriteString(h, "duet.payment.charge-key:"+key)
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return fmt.Errorf("lock idempotency key: %w", err)
	}
	return nil
}

const paymentColumns = `id, idempotency_key, fingerprint, currency, amount_units, refunded_units,
	status, decline_reason, reference, create_time, update_time, user_id, refund_pending_units`

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Create implements domain.Repository.
// A charge refused because its key was cancelled may have been captured by
// the provider: the refusal records the key's void due, due at once, in
// its own transaction, so that the capture is voided (ResumeVoids) even if
// the process stops before the charge's own void.
func (s *Store) Create(ctx context.Context, p *domain.Payment, evs ...domain.Event) error {
	var cancelled bool
	err := s.inTx(ctx, func(tx *sql.Tx) (bool, error) {
		if err := s.lockKey(ctx, tx, p.IdempotencyKey); err != nil {
			return false, err
		}
		var err error
		if cancelled, err = s.chargeCancelled(ctx, tx, p.IdempotencyKey); err != nil {
			return false, err
		} else if cancelled {
			_, err := s.markVoid(ctx, tx, p.IdempotencyKey, p.CreateTime, p.CreateTime)
			return false, err
		}
		_, err = tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO payments (`+paymentColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			p.ID, p.IdempotencyKey, p.Fingerprint, p.Amount.Currency, p.Amount.Units, p.RefundedUnits,
			string(p.Status), p.DeclineReason, p.Reference, micros(p.CreateTime), micros(p.UpdateTime), p.UserID,
			p.PendingRefundUnits)
		if sqldb.IsUniqueViolation(err) {
			return false, domain.ErrDuplicate
		}
		if err != nil {
			return false, fmt.Errorf("insert payment: %w", err)
		}
		return len(evs) > 0, s.appendEvents(ctx, tx, evs)
	})
	if err == nil && cancelled {
		return domain.ErrChargeCancelled
	}
	return err
}

// ChargeCancelled implements domain.Repository.
func (s *Store) ChargeCancelled(ctx context.Context, key string) (bool, error) {
	return s.chargeCancelled(ctx, s.db, key)
}

func (s *Store) chargeCancelled(ctx context.Context, q querier, key string) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, s.db.Rebind(`SELECT 1 FROM cancelled_charges WHERE idempotency_key = ?`), key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read cancelled charge: %w", err)
	}
	return true, nil
}

// CancelUncharged implements domain.Repository.
func (s *Store) CancelUncharged(ctx context.Context, key string, at time.Time) error {
	return s.inTx(ctx, func(tx *sql.Tx) (bool, error) {
		if err := s.lockKey(ctx, tx, key); err != nil {
			return false, err
		}
		var one int
		err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT 1 FROM payments WHERE idempotency_key = ?`), key).Scan(&one)
		switch {
		case err == nil:
			return false, domain.ErrDuplicate
		case !errors.Is(err, sql.ErrNoRows):
			return false, fmt.Errorf("read payment: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO cancelled_charges (idempotency_key, create_time)
			VALUES (?, ?) ON CONFLICT (idempotency_key) DO NOTHING`), key, micros(at)); err != nil {
			return false, fmt.Errorf("insert cancelled charge: %w", err)
		}
		return false, nil
	})
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
		&status, &p.DeclineReason, &p.Reference, &createTime, &updateTime, &p.UserID, &p.PendingRefundUnits)
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

// Refund implements domain.Repository, appending apply's events with the
// refund. The payment row is locked for the transaction (lockPayment),
// and the update is a compare-and-set on
// refunded_units besides: even without the lock, two racing refunds could
// not both apply to the same prior state.
func (s *Store) Refund(ctx context.Context, id, refundKey string, apply func(*domain.Payment, *domain.Refund) (*domain.Refund, []domain.Event, error)) (*domain.Payment, error) {
	var out *domain.Payment
	err := s.inTx(ctx, func(tx *sql.Tx) (bool, error) {
		p, err := s.lockPayment(ctx, tx, id)
		if err != nil {
			return false, err
		}
		var prior *domain.Refund
		if refundKey != "" {
			if prior, err = s.refundByKey(ctx, tx, id, refundKey); err != nil {
				return false, err
			}
		}
		before, pendingBefore := p.RefundedUnits, p.PendingRefundUnits
		r, evs, err := apply(p, prior)
		if err != nil {
			return false, err
		}
		if r == nil {
			out = p
			return false, nil
		}
		_, err = tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO refunds
			(`+refundColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			r.ID, r.PaymentID, r.Units, r.RequestedUnits, r.IdempotencyKey, micros(r.CreateTime), string(r.Status),
			r.Attempts, micros(r.NextAttemptTime))
		if sqldb.IsUniqueViolation(err) {
			return false, domain.ErrDuplicate
		}
		if err != nil {
			return false, fmt.Errorf("insert refund: %w", err)
		}
		// refund_pending_units moves by its change, as CompleteRefund's
		// does: the two never overwrite each other's.
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE payments
			SET refunded_units = ?, refund_pending_units = refund_pending_units + ?, status = ?, update_time = ?
			WHERE id = ? AND refunded_units = ? AND ? <= amount_units`),
			p.RefundedUnits, p.PendingRefundUnits-pendingBefore, string(p.Status), micros(p.UpdateTime), p.ID, before, p.RefundedUnits)
		if err != nil {
			return false, fmt.Errorf("update payment: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return false, fmt.Errorf("update payment: %w", err)
		} else if n != 1 {
			return false, domain.ErrConflict
		}
		if err := s.appendEvents(ctx, tx, evs); err != nil {
			return false, err
		}
		out = p
		return len(evs) > 0, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lockPayment reads payment id for a transaction that changes it, locking
// its row (SELECT … FOR UPDATE on PostgreSQL; SQLite transactions begin
// IMMEDIATE and so already exclude other writers).
func (s *Store) lockPayment(ctx context.Context, tx *sql.Tx, id string) (*domain.Payment, error) {
	query := `SELECT ` + paymentColumns + ` FROM payments WHERE id = ?`
	if s.db.Dialect == sqldb.Postgres {
		query += ` FOR UPDATE`
	}
	return s.one(ctx, tx, query, id)
}

const refundColumns = `id, payment_id, units, requested_units, idempotency_key, create_time, status,
	attempts, next_attempt_time`

// refundByKey returns the refund of payment id recorded under key, or nil.
func (s *Store) refundByKey(ctx context.Context, tx *sql.Tx, id, key string) (*domain.Refund, error) {
	rs, err := s.refunds(ctx, tx, `SELECT `+refundColumns+` FROM refunds WHERE payment_id = ? AND idempotency_key = ?`, id, key)
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	return &rs[0], nil
}

// Refunds returns the refunds of payment id, oldest first. The domain does
// not need it; it lets tests and operators audit refunds against the total.
func (s *Store) Refunds(ctx context.Context, id string) ([]domain.Refund, error) {
	return s.refunds(ctx, s.db, `SELECT `+refundColumns+` FROM refunds WHERE payment_id = ? ORDER BY create_time, id`, id)
}

// PendingRefunds implements domain.Repository.
func (s *Store) PendingRefunds(ctx context.Context, paymentID string, limit int) ([]domain.Refund, error) {
	return s.refunds(ctx, s.db, `SELECT `+refundColumns+` FROM refunds
		WHERE payment_id = ? AND status = 'PENDING' ORDER BY create_time, id LIMIT ?`, paymentID, limit)
}

// DueRefunds implements domain.Repository.
func (s *Store) DueRefunds(ctx context.Context, at time.Time, limit int) ([]domain.Refund, error) {
	// The status is a literal so that PostgreSQL can match the partial
	// index refunds_pending whatever plan it caches.
	return s.refunds(ctx, s.db, `SELECT `+refundColumns+` FROM refunds
		WHERE status = 'PENDING' AND next_attempt_time <= ? ORDER BY next_attempt_time, id LIMIT ?`, micros(at), limit)
}

// ClaimRefund implements domain.Repository: a compare-and-set on the
// refund's next_attempt_time.
func (s *Store) ClaimRefund(ctx context.Context, r domain.Refund, next time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE refunds SET attempts = attempts + 1, next_attempt_time = ?
		WHERE id = ? AND status = 'PENDING' AND next_attempt_time = ?`), micros(next), r.ID, micros(r.NextAttemptTime))
	if err != nil {
		return false, fmt.Errorf("claim refund: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim refund: %w", err)
	}
	return n == 1, nil
}

// OldestPending returns since when the oldest refund still pending, and
// the oldest void still due, have waited: the zero time when none does.
// For the operators' metrics; the domain does not need it.
func (s *Store) OldestPending(ctx context.Context) (refund, void time.Time, err error) {
	var r, v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT MIN(create_time) FROM refunds WHERE status = 'PENDING'),
		(SELECT MIN(void_since) FROM cancelled_charges WHERE void_status = 'PENDING')`).Scan(&r, &v); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("read the oldest pending: %w", err)
	}
	if r.Valid {
		refund = fromMicros(r.Int64)
	}
	if v.Valid {
		void = fromMicros(v.Int64)
	}
	return refund, void, nil
}

// MarkVoidDue implements domain.Repository.
func (s *Store) MarkVoidDue(ctx context.Context, key string, at, next time.Time) (int64, error) {
	return s.markVoid(ctx, s.db, key, at, next)
}

// markVoid marks key's void due at next, over q; a void that was done
// starts over, pending since at with no attempt made.
func (s *Store) markVoid(ctx context.Context, q querier, key string, at, next time.Time) (int64, error) {
	var mark int64
	err := q.QueryRowContext(ctx, s.db.Rebind(`UPDATE cancelled_charges
		SET void_next_attempt_time = ?, void_marks = void_marks + 1,
			void_since = CASE WHEN void_status = 'DONE' THEN ? ELSE void_since END,
			void_attempts = CASE WHEN void_status = 'DONE' THEN 0 ELSE void_attempts END,
			void_status = 'PENDING'
		WHERE idempotency_key = ? RETURNING void_marks`), micros(next), micros(at), key).Scan(&mark)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, domain.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("mark void due: %w", err)
	}
	return mark, nil
}

// VoidDone implements domain.Repository.
func (s *Store) VoidDone(ctx context.Context, key string, mark int64) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE cancelled_charges SET void_status = 'DONE'
		WHERE idempotency_key = ? AND void_status = 'PENDING' AND void_marks = ?`), key, mark)
	if err != nil {
		return false, fmt.Errorf("record void done: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record void done: %w", err)
	}
	return n == 1, nil
}

// DueVoids implements domain.Repository.
func (s *Store) DueVoids(ctx context.Context, at time.Time, limit int) ([]domain.PendingVoid, error) {
	// The status is a literal, as in DueRefunds, for the partial index.
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT idempotency_key, void_marks, void_attempts, void_since, void_next_attempt_time
		FROM cancelled_charges WHERE void_status = 'PENDING' AND void_next_attempt_time <= ?
		ORDER BY void_next_attempt_time, idempotency_key LIMIT ?`), micros(at), limit)
	if err != nil {
		return nil, fmt.Errorf("read due voids: %w", err)
	}
	defer rows.Close()
	var out []domain.PendingVoid
	for rows.Next() {
		var (
			v           domain.PendingVoid
			since, next int64
		)
		if err := rows.Scan(&v.Key, &v.Mark, &v.Attempts, &since, &next); err != nil {
			return nil, fmt.Errorf("read due voids: %w", err)
		}
		v.Since, v.NextAttemptTime = fromMicros(since), fromMicros(next)
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read due voids: %w", err)
	}
	return out, nil
}

// ClaimVoid implements domain.Repository: a compare-and-set on the key's
// void_next_attempt_time.
func (s *Store) ClaimVoid(ctx context.Context, v domain.PendingVoid, next time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE cancelled_charges
		SET void_attempts = void_attempts + 1, void_next_attempt_time = ?
		WHERE idempotency_key = ? AND void_status = 'PENDING' AND void_next_attempt_time = ?`),
		micros(next), v.Key, micros(v.NextAttemptTime))
	if err != nil {
		return false, fmt.Errorf("claim void: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim void: %w", err)
	}
	return n == 1, nil
}

// CompleteRefund implements domain.Repository. The refund's status moves
// from PENDING only once: a second completion (another replica, or a
// repeat, asked the provider too) changes nothing and reports no event.
func (s *Store) CompleteRefund(ctx context.Context, r domain.Refund, at time.Time, report func(*domain.Payment) []domain.Event) (*domain.Payment, bool, error) {
	var (
		out  *domain.Payment
		done bool
	)
	err := s.inTx(ctx, func(tx *sql.Tx) (bool, error) {
		p, err := s.lockPayment(ctx, tx, r.PaymentID)
		if err != nil {
			return false, err
		}
		out = p
		// The units as recorded, not as the caller read them (RETURNING:
		// SQLite ≥ 3.35, PostgreSQL).
		var units int64
		err = tx.QueryRowContext(ctx, s.db.Rebind(`UPDATE refunds SET status = 'DONE'
			WHERE id = ? AND status = 'PENDING' RETURNING units`), r.ID).Scan(&units)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("complete refund: %w", err)
		}
		p.PendingRefundUnits -= units
		if at.After(p.UpdateTime) {
			p.UpdateTime = at
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE payments SET refund_pending_units = refund_pending_units - ?, update_time = ? WHERE id = ?`),
			units, micros(p.UpdateTime), p.ID); err != nil {
			return false, fmt.Errorf("complete refund: update payment: %w", err)
		}
		evs := report(p)
		if err := s.appendEvents(ctx, tx, evs); err != nil {
			return false, err
		}
		done = true
		return len(evs) > 0, nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, done, nil
}

// refunds runs query, which selects refundColumns, over q.
func (s *Store) refunds(ctx context.Context, q querier, query string, args ...any) ([]domain.Refund, error) {
	rows, err := q.QueryContext(ctx, s.db.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("read refunds: %w", err)
	}
	defer rows.Close()
	var out []domain.Refund
	for rows.Next() {
		var (
			r                    domain.Refund
			createTime, nextTime int64
			status               string
		)
		if err := rows.Scan(&r.ID, &r.PaymentID, &r.Units, &r.RequestedUnits, &r.IdempotencyKey, &createTime, &status,
			&r.Attempts, &nextTime); err != nil {
			return nil, fmt.Errorf("read refunds: %w", err)
		}
		r.CreateTime, r.Status, r.NextAttemptTime = fromMicros(createTime), domain.RefundStatus(status), fromMicros(nextTime)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read refunds: %w", err)
	}
	return out, nil
}

// micros and fromMicros convert times to and from the stored unix microseconds.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
