package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/duetkit/duet/internal/await"
)

// openGroupTest opens a SQLite database with one table of unique names.
func openGroupTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "g.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE names (name TEXT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return db
}

// holdTurn starts an InTx call that keeps the turn until release is
// closed.
func holdTurn(t *testing.T, db *DB) (release chan struct{}, done chan error) {
	t.Helper()
	release, done, started := make(chan struct{}), make(chan error, 1), make(chan struct{})
	go func() {
		done <- db.InTx(context.Background(), func(tx *sql.Tx) error {
			close(started)
			<-release
			_, err := tx.Exec("INSERT INTO names VALUES ('holder')")
			return err
		})
	}()
	<-started
	return release, done
}

// waitForWaiters waits until n calls wait for their turn.
func waitForWaiters(t *testing.T, db *DB, n int) {
	t.Helper()
	await.Until(t, fmt.Sprintf("%d calls waiting their turn", n), 10*time.Second, func() bool {
		db.group.mu.Lock()
		defer db.group.mu.Unlock()
		return len(db.group.waiters) == n
	})
}

// insertInTx starts an InTx call that inserts name and returns where its
// error will arrive.
func insertInTx(ctx context.Context, db *DB, name string) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec("INSERT INTO names VALUES (?)", name)
			return err
		})
	}()
	return done
}

func names(t *testing.T, db *DB) map[string]bool {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT name FROM names")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got[s] = true
	}
	return got
}

// TestGroupCommitIsolatesCalls has calls that succeed, fail, fail on a
// statement and panic share one transaction, and checks that exactly the
// work of the successful ones is stored and each call returns as it would
// have alone.
func TestGroupCommitIsolatesCalls(t *testing.T) {
	db := openGroupTest(t)
	const n = 40
	errBoom := errors.New("boom")
	// Queue every call behind one that holds the turn, so they share
	// transactions.
	var wg sync.WaitGroup
	errs := make([]error, n)
	panicked := make([]bool, n)
	release, holder := holdTurn(t, db)
	for i := range n {
		wg.Go(func() {
			defer func() {
				if recover() != nil {
					panicked[i] = true
				}
			}()
			errs[i] = db.InTx(t.Context(), func(tx *sql.Tx) error {
				if _, err := tx.Exec("INSERT INTO names VALUES (?)", fmt.Sprint("n", i)); err != nil {
					return err
				}
				switch i % 4 {
				case 1:
					return errBoom
				case 2:
					// A unique violation: only this statement fails, and
					// the call's error rolls back its first insert too.
					_, err := tx.Exec("INSERT INTO names VALUES ('holder')")
					if err == nil {
						_, err = tx.Exec("INSERT INTO names VALUES (?)", fmt.Sprint("n", i))
					}
					return err
				case 3:
					panic("boom")
				}
				// Earlier calls' work is visible; this one's too.
				var seen int
				if err := tx.QueryRow("SELECT count(*) FROM names WHERE name = ?", fmt.Sprint("n", i)).Scan(&seen); err != nil {
					return err
				}
				if seen != 1 {
					return fmt.Errorf("own row seen %d times", seen)
				}
				return nil
			})
		})
	}
	waitForWaiters(t, db, n)
	close(release)
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	got := names(t, db)
	for i := range n {
		name := fmt.Sprint("n", i)
		switch i % 4 {
		case 0:
			if errs[i] != nil || !got[name] {
				t.Errorf("call %d: err %v, stored %v; want nil, true", i, errs[i], got[name])
			}
		case 1:
			if !errors.Is(errs[i], errBoom) || got[name] {
				t.Errorf("call %d: err %v, stored %v; want boom, false", i, errs[i], got[name])
			}
		case 2:
			if !IsUniqueViolation(errs[i]) || got[name] {
				t.Errorf("call %d: err %v, stored %v; want a unique violation, false", i, errs[i], got[name])
			}
		case 3:
			if !panicked[i] || got[name] {
				t.Errorf("call %d: panicked %v, stored %v; want true, false", i, panicked[i], got[name])
			}
		}
	}
	if len(got) != 1+n/4 {
		t.Errorf("stored %d names, want %d: %v", len(got), 1+n/4, got)
	}
	db.group.mu.Lock()
	defer db.group.mu.Unlock()
	if db.group.held || db.group.open != nil || len(db.group.waiters) > 0 {
		t.Errorf("group left held %v, open %v, %d waiters", db.group.held, db.group.open != nil, len(db.group.waiters))
	}
}

// TestGroupCommitCancelledWaiter checks that a call whose context ends
// while it waits for its turn gives up without storing anything, and that
// the calls around it carry on.
func TestGroupCommitCancelledWaiter(t *testing.T) {
	db := openGroupTest(t)
	ctx, cancel := context.WithCancel(t.Context())
	waited := make(chan error, 1)
	release, holder := holdTurn(t, db)
	go func() {
		waited <- db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec("INSERT INTO names VALUES ('cancelled')")
			return err
		})
	}()
	waitForWaiters(t, db, 1)
	cancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call: %v, want context.Canceled", err)
	}
	close(release)
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	if err := db.InTx(t.Context(), func(tx *sql.Tx) error {
		_, err := tx.Exec("INSERT INTO names VALUES ('after')")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, db); len(got) != 2 || !got["holder"] || !got["after"] {
		t.Errorf("stored %v, want holder and after", got)
	}
}

// cancelDuringStatement is called by the SQL function sqldb_test_cancel,
// from inside the statement that calls it.
var (
	cancelDuringStatement atomic.Pointer[context.CancelFunc]
	registerCancelFunc    sync.Once
)

// cancellingInsert cancels the context set by cancelledDuringStatement at
// its first row, then goes on for many more, long enough for the driver's
// interrupt to land.
const cancellingInsert = `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
	INSERT INTO names SELECT 'c' || sqldb_test_cancel(x) FROM c`

// cancelledDuringStatement returns a context that cancellingInsert
// cancels while it runs. Databases opened after the first call know the
// function.
func cancelledDuringStatement(t *testing.T) context.Context {
	t.Helper()
	registerCancelFunc.Do(func() {
		err := sqlite.RegisterScalarFunction("sqldb_test_cancel", 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
			if args[0] == int64(1) {
				if cancel := cancelDuringStatement.Load(); cancel != nil {
					(*cancel)()
				}
			}
			return args[0], nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	cancelDuringStatement.Store(&cancel)
	t.Cleanup(func() {
		cancelDuringStatement.Store(nil)
		cancel()
	})
	return ctx
}

// TestGroupCommitCallerCancelledDuringStatement ends one call's context
// while its statement runs, inside a transaction shared with calls before
// and after it. SQLite rolls back a whole transaction when a write in it
// is interrupted, so the driver's interrupt would undo the other calls'
// work: they must be stored all the same, and the cancelled call must
// return what became of its own. The statement runs each way database/sql
// offers: directly, prepared on the transaction, and a DB statement
// moved onto it.
func TestGroupCommitCallerCancelledDuringStatement(t *testing.T) {
	tests := []struct {
		name string
		exec func(ctx context.Context, tx *sql.Tx, dbStmt *sql.Stmt) error
	}{
		{"tx.ExecContext", func(ctx context.Context, tx *sql.Tx, _ *sql.Stmt) error {
			_, err := tx.ExecContext(ctx, cancellingInsert)
			return err
		}},
		{"tx.PrepareContext", func(ctx context.Context, tx *sql.Tx, _ *sql.Stmt) error {
			st, err := tx.PrepareContext(ctx, cancellingInsert)
			if err != nil {
				return err
			}
			defer st.Close()
			_, err = st.ExecContext(ctx)
			return err
		}},
		{"tx.StmtContext", func(ctx context.Context, tx *sql.Tx, dbStmt *sql.Stmt) error {
			_, err := tx.StmtContext(ctx, dbStmt).ExecContext(ctx)
			return err
		}},
		{"tx.QueryContext", func(ctx context.Context, tx *sql.Tx, _ *sql.Stmt) error {
			rows, err := tx.QueryContext(ctx, cancellingInsert+" RETURNING name")
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			if err := rows.Close(); err != nil {
				return err
			}
			return rows.Err()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := cancelledDuringStatement(t)
			db := openGroupTest(t)
			// Prepared on the DB before any call holds its one connection
			// (see Open), for tx.StmtContext.
			dbStmt, err := db.PrepareContext(t.Context(), cancellingInsert)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dbStmt.Close() })

			release, holder := holdTurn(t, db)
			cancelled := make(chan error, 1)
			go func() {
				cancelled <- db.InTx(ctx, func(tx *sql.Tx) error { return tt.exec(ctx, tx, dbStmt) })
			}()
			waitForWaiters(t, db, 1)
			after := insertInTx(t.Context(), db, "after")
			waitForWaiters(t, db, 2)
			close(release)

			if err := <-holder; err != nil {
				t.Errorf("the call before: %v", err)
			}
			if err := <-after; err != nil {
				t.Errorf("the call after: %v", err)
			}
			err = <-cancelled
			if ctx.Err() == nil {
				t.Fatal("the statement did not cancel its call's context")
			}
			got := names(t, db)
			if !got["holder"] || !got["after"] {
				t.Errorf("stored holder: %v, after: %v; want both", got["holder"], got["after"])
			}
			// The cancelled call's statement had begun: it either finished and is
			// stored, or failed and left nothing; its error says which.
			if stored := got["c1"]; stored != (err == nil) {
				t.Errorf("cancelled call returned %v, its rows stored: %v", err, stored)
			}
		})
	}
}

// TestOwnTransactionKeepsInterrupt checks the other side of the above: a
// transaction the caller began itself holds nobody else's work, and its
// statement is still interrupted when the caller's context ends.
func TestOwnTransactionKeepsInterrupt(t *testing.T) {
	ctx := cancelledDuringStatement(t)
	db := openGroupTest(t)
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, cancellingInsert); err == nil {
		t.Error("the statement ran to its end after its context was cancelled; want it interrupted")
	}
}

// TestGroupCommitBrokenTransaction fails every call of a transaction that
// SQLite rolled back whole: none may report its work stored.
func TestGroupCommitBrokenTransaction(t *testing.T) {
	db := openGroupTest(t)
	release, holder := holdTurn(t, db)
	second := make(chan error, 1)
	go func() {
		second <- db.InTx(t.Context(), func(tx *sql.Tx) error {
			// Ends the shared transaction behind the group's back, as
			// SQLite does after some errors, and hides it from InTx.
			_, _ = tx.Exec("ROLLBACK")
			return nil
		})
	}()
	waitForWaiters(t, db, 1)
	close(release)
	if err := <-holder; err == nil {
		t.Error("holder: nil error, want the broken transaction's")
	}
	if err := <-second; err == nil {
		t.Error("second: nil error, want the broken transaction's")
	}
	if got := names(t, db); len(got) != 0 {
		t.Errorf("stored %v, want nothing", got)
	}
}

// TestGroupCommitFirstCallLosesTransaction has the call that began a
// transaction hide that SQLite rolled it back while another call waits:
// the first call must fail, and the next one run in a transaction of its
// own.
func TestGroupCommitFirstCallLosesTransaction(t *testing.T) {
	db := openGroupTest(t)
	release, started := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.InTx(t.Context(), func(tx *sql.Tx) error {
			close(started)
			<-release
			if _, err := tx.Exec("INSERT INTO names VALUES ('lost')"); err != nil {
				return err
			}
			_, _ = tx.Exec("ROLLBACK")
			return nil
		})
	}()
	<-started
	second := insertInTx(t.Context(), db, "kept")
	waitForWaiters(t, db, 1)
	close(release)
	if err := <-first; err == nil {
		t.Error("first: nil error, want the lost transaction's")
	}
	if err := <-second; err != nil {
		t.Errorf("second: %v", err)
	}
	if got := names(t, db); len(got) != 1 || !got["kept"] {
		t.Errorf("stored %v, want kept", got)
	}
}

// TestGroupCommitLetsReadyCallersJoin starts calls on one processor, so
// that each is ready to run but has not called InTx when the first one
// is about to commit: they must join its transaction rather than commit
// one each. Calls in one transaction get the same *sql.Tx.
func TestGroupCommitLetsReadyCallersJoin(t *testing.T) {
	db := openGroupTest(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const n = 8
	var (
		mu  sync.Mutex
		txs = map[*sql.Tx]bool{}
		wg  sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			err := db.InTx(context.Background(), func(tx *sql.Tx) error {
				mu.Lock()
				txs[tx] = true
				mu.Unlock()
				_, err := tx.Exec("INSERT INTO names VALUES (?)", fmt.Sprint(i))
				return err
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := len(names(t, db)); got != n {
		t.Fatalf("%d rows stored, want %d", got, n)
	}
	if len(txs) > n/2 {
		t.Errorf("%d calls ran in %d transactions: ready callers did not join", n, len(txs))
	}
}
