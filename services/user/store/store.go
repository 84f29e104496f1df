// Package store keeps users in SQL (SQLite or PostgreSQL through kit/sqldb)
// and implements domain.Repository, writing the events that report each
// change to the kit/events outbox in the change's own transaction.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/user/domain"
	"github.com/duetkit/duet/services/user/wire"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the goose migrations that create the store's tables,
// for sqldb.Open.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above; cannot happen
	}
	return sub
}

// MigrationTable is the goose version table of the user service, so it can
// share a database with other services.
const MigrationTable = "user_goose_db_version"

// Open opens the database at url and brings its schema up to date: the
// user tables and the kit/events outbox.
func Open(ctx context.Context, url string, opts ...sqldb.Option) (*sqldb.DB, error) {
	opts = append([]sqldb.Option{sqldb.WithMigrationTable(MigrationTable)}, opts...)
	db, err := sqldb.Open(ctx, url, Migrations(), opts...)
	if err != nil {
		return nil, err
	}
	if err := events.Migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	return db, nil
}

// Store is the SQL user repository.
type Store struct {
	db *sqldb.DB
	// appended, when set, is called after a transaction that appended
	// events commits (to wake the relay).
	appended func()

	insert, get, getForUpdate, update, list, listAfter string
}

var _ domain.Repository = (*Store)(nil)

// New returns a Store over db, whose schema Open has migrated.
func New(db *sqldb.DB) *Store {
	const columns = "id, email, name, create_time, update_time"
	s := &Store{db: db}
	s.insert = db.Rebind("INSERT INTO users (id, email, email_key, name, create_time, update_time) VALUES (?, ?, ?, ?, ?, ?)")
	s.get = db.Rebind("SELECT " + columns + " FROM users WHERE id = ?")
	s.getForUpdate = s.get
	if db.Dialect == sqldb.Postgres {
		// SQLite transactions already hold the write lock (BEGIN IMMEDIATE).
		s.getForUpdate += " FOR UPDATE"
	}
	s.update = db.Rebind("UPDATE users SET email = ?, email_key = ?, name = ?, update_time = ? WHERE id = ?")
	s.list = db.Rebind("SELECT " + columns + " FROM users ORDER BY create_time, id LIMIT ?")
	s.listAfter = db.Rebind("SELECT " + columns + " FROM users WHERE (create_time, id) > (?, ?) ORDER BY create_time, id LIMIT ?")
	return s
}

// OnAppend makes the store call f after each commit that appended events,
// typically events.Relay.Notify. Call it before the store is used.
func (s *Store) OnAppend(f func()) { s.appended = f }

// committed calls the OnAppend hook when a transaction appended events.
func (s *Store) committed(evs []domain.Event) {
	if len(evs) > 0 && s.appended != nil {
		s.appended()
	}
}

// appendEvents writes evs to the outbox in tx.
func (s *Store) appendEvents(ctx context.Context, tx *sql.Tx, evs []domain.Event) error {
	for _, e := range evs {
		ev, err := wire.Event(e)
		if err != nil {
			return err
		}
		if _, err := events.Append(ctx, tx, s.db.Dialect, ev); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	return nil
}

// Create stores a new user and evs; a duplicate email key is
// domain.ErrEmailTaken.
func (s *Store) Create(ctx context.Context, u domain.User, evs ...domain.Event) error {
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.insert,
			u.ID, u.Email, u.EmailKey(), u.Name, u.CreateTime.UnixMicro(), u.UpdateTime.UnixMicro())
		if sqldb.IsUniqueViolation(err) {
			// The id is a fresh UUIDv7, so the email key is the index
			// that can collide.
			return domain.ErrEmailTaken
		}
		if err != nil {
			return fmt.Errorf("store: insert user: %w", err)
		}
		return s.appendEvents(ctx, tx, evs)
	})
	if err != nil {
		return err
	}
	s.committed(evs)
	return nil
}

// Get returns the user with id, or domain.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (domain.User, error) {
	return scanUser(s.db.QueryRowContext(ctx, s.get, id))
}

// List returns up to limit users after pos, ordered by (create_time, id).
func (s *Store) List(ctx context.Context, after *domain.Position, limit int) ([]domain.User, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if after == nil {
		rows, err = s.db.QueryContext(ctx, s.list, limit)
	} else {
		rows, err = s.db.QueryContext(ctx, s.listAfter, after.CreateTime.UnixMicro(), after.ID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	defer rows.Close()
	users := make([]domain.User, 0, limit)
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	return users, nil
}

// Update loads user id, applies fn and writes the result with the events fn
// returns in one transaction; no events, no write. An email another user
// holds is domain.ErrEmailTaken.
func (s *Store) Update(ctx context.Context, id string, fn func(*domain.User) ([]domain.Event, error)) (domain.User, error) {
	var (
		out domain.User
		evs []domain.Event
	)
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		u, err := scanUser(tx.QueryRowContext(ctx, s.getForUpdate, id))
		if err != nil {
			return err
		}
		if evs, err = fn(&u); err != nil {
			return err
		}
		if len(evs) > 0 {
			_, err := tx.ExecContext(ctx, s.update, u.Email, u.EmailKey(), u.Name, u.UpdateTime.UnixMicro(), u.ID)
			if sqldb.IsUniqueViolation(err) {
				return domain.ErrEmailTaken
			}
			if err != nil {
				return fmt.Errorf("store: update user: %w", err)
			}
			if err := s.appendEvents(ctx, tx, evs); err != nil {
				return err
			}
		}
		out = u
		return nil
	})
	if err != nil {
		return domain.User{}, err
	}
	s.committed(evs)
	return out, nil
}

// scanUser reads one user row; no row is domain.ErrNotFound.
func scanUser(row interface{ Scan(...any) error }) (domain.User, error) {
	var (
		u                      domain.User
		createTime, updateTime int64
	)
	err := row.Scan(&u.ID, &u.Email, &u.Name, &createTime, &updateTime)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.User{}, domain.ErrNotFound
	}
	if err != nil {
		return domain.User{}, fmt.Errorf("store: read user: %w", err)
	}
	u.CreateTime = time.UnixMicro(createTime).UTC()
	u.UpdateTime = time.UnixMicro(updateTime).UTC()
	return u, nil
}
