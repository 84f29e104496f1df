package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// queryIDs returns the ids of the widgets created at ts, in id order.
func queryIDs(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, db *sqldb.DB, ts int64) ([]string, error) {
	rows, err := q.QueryContext(ctx, db.Rebind("SELECT id FROM widgets WHERE create_time = ? ORDER BY id"), ts)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// TestStatementReuse runs the same statements many times, inside and outside
// transactions and while rows from the same query text are still open: on
// SQLite these share one cached prepared statement per connection.
func TestStatementReuse(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url)
		ctx := t.Context()
		insert := db.Rebind("INSERT INTO widgets (id, name, name_key, create_time) VALUES (?, ?, ?, ?)")
		const n = 50
		for i := range n {
			if _, err := db.ExecContext(ctx, insert, fmt.Sprintf("a%03d", i), "a", fmt.Sprintf("a%03d", i), int64(1)); err != nil {
				t.Fatalf("insert %d: %v", i, err)
			}
		}
		for i := range n {
			// Every other one rolls back: the statement must be reusable
			// after a rollback, and the rolled back rows must be gone.
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				id := fmt.Sprintf("b%03d", i)
				if _, err := tx.ExecContext(ctx, insert, id, "b", id, int64(2)); err != nil {
					return err
				}
				if i%2 == 1 {
					return errRollback
				}
				return nil
			})
			if err != nil && !errors.Is(err, errRollback) {
				t.Fatalf("tx %d: %v", i, err)
			}
		}
		// A unique violation from a cached statement leaves it usable.
		if _, err := db.ExecContext(ctx, insert, "a000", "dup", "dup", int64(1)); !sqldb.IsUniqueViolation(err) {
			t.Fatalf("duplicate insert: err = %v, want a unique violation", err)
		}
		for range 3 {
			ids, err := queryIDs(ctx, db, db, 1)
			if err != nil || len(ids) != n || ids[0] != "a000" || ids[n-1] != fmt.Sprintf("a%03d", n-1) {
				t.Fatalf("query ts=1: %d ids, err %v", len(ids), err)
			}
			ids, err = queryIDs(ctx, db, db, 2)
			if err != nil || len(ids) != n/2 {
				t.Fatalf("query ts=2: %d ids, err %v; want %d", len(ids), err, n/2)
			}
		}

		if db.Dialect != sqldb.SQLite {
			// pgx cannot run a statement while another's rows are open on
			// the same connection, so the rest is SQLite's alone.
			return
		}
		// Inside one transaction, keep rows of a query open while the same
		// query text, an insert and a count run; then run it again after.
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, db.Rebind("SELECT id FROM widgets WHERE create_time = ? ORDER BY id"), int64(1))
			if err != nil {
				return err
			}
			defer rows.Close()
			seen := 0
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				if want := fmt.Sprintf("a%03d", seen); id != want {
					return fmt.Errorf("outer row %d = %q, want %q", seen, id, want)
				}
				seen++
				if seen%10 != 0 {
					continue
				}
				inner, err := queryIDs(ctx, tx, db, 2)
				if err != nil {
					return fmt.Errorf("inner query: %w", err)
				}
				if len(inner) != n/2+seen/10-1 {
					return fmt.Errorf("inner query saw %d rows, want %d", len(inner), n/2+seen/10-1)
				}
				same, err := queryIDs(ctx, tx, db, 1)
				if err != nil || len(same) != n {
					return fmt.Errorf("same query while open: %d rows, err %v", len(same), err)
				}
				id = fmt.Sprintf("c%03d", seen)
				if _, err := tx.ExecContext(ctx, insert, id, "c", id, int64(2)); err != nil {
					return fmt.Errorf("insert while open: %w", err)
				}
			}
			if err := rows.Err(); err != nil {
				return err
			}
			if seen != n {
				return fmt.Errorf("outer query saw %d rows, want %d", seen, n)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			again, err := queryIDs(ctx, tx, db, 1)
			if err != nil || len(again) != n {
				return fmt.Errorf("query after close: %d rows, err %v", len(again), err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := count(t, db, "widgets"), n+n/2+n/10; got != want {
			t.Fatalf("widgets = %d, want %d", got, want)
		}
	})
}

// errRollback makes InTx roll back.
var errRollback = errors.New("roll back")

// TestStatementReuseConcurrent has many goroutines run the same few
// statements at once, in and out of transactions; run it with -race.
func TestStatementReuseConcurrent(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url)
		ctx := t.Context()
		const workers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("w%d-%d", w, i)
					var err error
					if i%2 == 0 {
						err = insertWidget(ctx, db, db, id, id)
					} else {
						err = db.InTx(ctx, func(tx *sql.Tx) error {
							if err := insertWidget(ctx, tx, db, id, id); err != nil {
								return err
							}
							_, err := queryIDs(ctx, tx, db, 1)
							return err
						})
					}
					if err == nil {
						var name string
						err = db.QueryRowContext(ctx, db.Rebind("SELECT name FROM widgets WHERE id = ?"), id).Scan(&name)
						if err == nil && name != id {
							err = fmt.Errorf("name of %s = %q", id, name)
						}
					}
					if err != nil {
						errs <- fmt.Errorf("worker %d step %d: %w", w, i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := count(t, db, "widgets"); got != workers*each {
			t.Fatalf("widgets = %d, want %d", got, workers*each)
		}
	})
}
