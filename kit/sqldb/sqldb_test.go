package sqldb_test

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	neturl "net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

//go:embed testdata/migrations/*.sql
var testdata embed.FS

// migrations returns the test migrations; t may be nil outside a test.
func migrations(t testing.TB) fs.FS {
	sub, err := fs.Sub(testdata, "testdata/migrations")
	if err != nil {
		panic(err) // embedded above; cannot happen
	}
	return sub
}

func open(t *testing.T, url string, opts ...sqldb.Option) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(t.Context(), url, migrations(t), opts...)
	if err != nil {
		t.Fatalf("Open(%q): %v", url, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func insertWidget(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, db *sqldb.DB, id, name string) error {
	_, err := q.ExecContext(ctx, db.Rebind("INSERT INTO widgets (id, name, name_key, create_time) VALUES (?, ?, ?, ?)"),
		id, name, name, int64(1))
	return err
}

func count(t *testing.T, db *sqldb.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestOpenMigrates(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url, sqldb.WithMigrationTable("widget_goose_db_version"))
		if got := count(t, db, "widget_goose_db_version"); got < 2 {
			t.Errorf("version rows = %d, want at least 2", got)
		}
		if got := count(t, db, "parts"); got != 0 {
			t.Errorf("parts rows = %d, want 0", got)
		}
		// Opening again finds nothing pending and keeps the data.
		if err := insertWidget(t.Context(), db, db, "w1", "one"); err != nil {
			t.Fatal(err)
		}
		again := open(t, url, sqldb.WithMigrationTable("widget_goose_db_version"))
		if got := count(t, again, "widgets"); got != 1 {
			t.Errorf("widgets after reopen = %d, want 1", got)
		}
	})
}

func TestOpenConcurrentlyMigratesOnce(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				db, err := sqldb.Open(t.Context(), url, migrations(t))
				if err == nil {
					err = db.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Open #%d: %v", i, err)
			}
		}
	})
}

func TestOpenURLs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		url     string
		dialect sqldb.Dialect
		wantErr bool
	}{
		{name: "sqlite scheme", url: "sqlite:" + filepath.Join(dir, "a.db"), dialect: sqldb.SQLite},
		{name: "sqlite triple slash", url: "sqlite://" + filepath.Join(dir, "b.db"), dialect: sqldb.SQLite},
		{name: "plain path", url: filepath.Join(dir, "c.db"), dialect: sqldb.SQLite},
		{name: "memory", url: "sqlite::memory:", dialect: sqldb.SQLite},
		{name: "missing directories created", url: "sqlite:" + filepath.Join(dir, "x", "y", "f.db"), dialect: sqldb.SQLite},
		{name: "sqlite URI", url: "sqlite:file:" + filepath.Join(dir, "g.db") + "?cache=private", dialect: sqldb.SQLite},
		{name: "caller params kept", url: "sqlite:" + filepath.Join(dir, "d.db") + "?_busy_timeout=100", dialect: sqldb.SQLite},
		{name: "empty", url: "", wantErr: true},
		{name: "unknown scheme", url: "mysql://root@localhost/db", wantErr: true},
		{name: "no path", url: "sqlite:", wantErr: true},
		{name: "PostgreSQL key/value DSN", url: "host=127.0.0.1 user=postgres dbname=test", wantErr: true},
		{name: "bad sqlite param", url: "sqlite:" + filepath.Join(dir, "e.db") + "?_txlock=sometimes", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := sqldb.Open(t.Context(), tt.url, migrations(t))
			if tt.wantErr {
				if err == nil {
					_ = db.Close()
					t.Fatalf("Open(%q) succeeded, want error", tt.url)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.url, err)
			}
			defer db.Close()
			if db.Dialect != tt.dialect {
				t.Errorf("Dialect = %q, want %q", db.Dialect, tt.dialect)
			}
			if err := insertWidget(t.Context(), db, db, "w", "w"); err != nil {
				t.Errorf("insert: %v", err)
			}
		})
	}
}

// TestPostgresPoolSize: pool_max_conns sizes the PostgreSQL pool; pgx
// passed it to the server as a setting, which refused the connection, so
// the pool could not be made smaller than its 20 (five services sharing a
// server took all of its default 100 connections).
func TestPostgresPoolSize(t *testing.T) {
	for _, bad := range []string{"0", "-1", "ten", ""} {
		u := "postgres://postgres@127.0.0.1:1/none?sslmode=disable&pool_max_conns=" + bad
		if db, err := sqldb.Open(t.Context(), u, nil); err == nil || !strings.Contains(err.Error(), "pool_max_conns") {
			if db != nil {
				_ = db.Close()
			}
			t.Errorf("pool_max_conns=%q: Open = %v, want an error naming pool_max_conns", bad, err)
		}
	}
	pg, ok := sqldbtest.URLs(t)["postgres"]
	if !ok {
		t.Skipf("%s is not set", sqldbtest.PostgresEnv)
	}
	tests := []struct {
		name string
		url  string
		want int
	}{
		{name: "default", url: pg, want: 20},
		{name: "three", url: pg + "&pool_max_conns=3", want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := open(t, tt.url)
			if got := db.Stats().MaxOpenConnections; got != tt.want {
				t.Errorf("MaxOpenConnections = %d, want %d", got, tt.want)
			}
			if err := insertWidget(t.Context(), db, db, tt.name, tt.name); err != nil {
				t.Errorf("insert: %v", err)
			}
		})
	}
}

// TestPostgresNoSchema: a search_path naming no schema that exists made
// Open fail with "converting NULL to string is unsupported".
func TestPostgresNoSchema(t *testing.T) {
	u := sqldbtest.Postgres(t)
	q := u.Query()
	q.Set("search_path", "duet_no_such_schema")
	u.RawQuery = q.Encode()
	db, err := sqldb.Open(t.Context(), u.String(), migrations(t))
	if err == nil {
		_ = db.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "search_path") {
		t.Errorf("Open = %v, want an error naming search_path", err)
	}
}

// TestSQLitePragmas: Open's defaults, and the caller's own settings
// winning over them however they are given (a _pragma value used to lose:
// the driver applies those before the keys Open adds).
func TestSQLitePragmas(t *testing.T) {
	tests := []struct {
		name  string
		query string
		want  map[string]string
	}{
		{"defaults", "", map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "5000", "synchronous": "1"}},
		{"keys", "?_journal_mode=DELETE&_foreign_keys=0&_busy_timeout=100&_synchronous=FULL",
			map[string]string{"journal_mode": "delete", "foreign_keys": "0", "busy_timeout": "100", "synchronous": "2"}},
		{"aliases", "?_journal=DELETE&_fk=0&_timeout=100&_sync=FULL",
			map[string]string{"journal_mode": "delete", "foreign_keys": "0", "busy_timeout": "100", "synchronous": "2"}},
		{"pragmas", "?_pragma=journal_mode(DELETE)&_pragma=Foreign_Keys%3D0&_pragma=busy_timeout(100)&_pragma=synchronous(FULL)",
			map[string]string{"journal_mode": "delete", "foreign_keys": "0", "busy_timeout": "100", "synchronous": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := open(t, "sqlite:"+filepath.Join(t.TempDir(), "p.db")+tt.query)
			for pragma, want := range tt.want {
				var got string
				if err := db.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
					t.Fatalf("PRAGMA %s: %v", pragma, err)
				}
				if got != want {
					t.Errorf("PRAGMA %s = %q, want %q", pragma, got, want)
				}
			}
		})
	}
}

func TestOpenBadMigration(t *testing.T) {
	bad := fstestFS{"00001_bad.sql": "-- +goose Up\nCREATE TABLE (;\n"}
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db, err := sqldb.Open(t.Context(), url, bad.FS())
		if err == nil {
			_ = db.Close()
			t.Fatal("Open with a broken migration succeeded")
		}
	})
}

// TestOpenBrokenMigrationRunsOnce: a migration outside a transaction that
// fails half-way is not run again (SQLite's retry of a lost migration race
// used to repeat it for every migration in the set, applying its first
// statement three times here).
func TestOpenBrokenMigrationRunsOnce(t *testing.T) {
	files := fstestFS{
		"00001_t.sql":    "-- +goose Up\nCREATE TABLE t (v INTEGER);\n",
		"00002_fill.sql": "-- +goose NO TRANSACTION\n-- +goose Up\nINSERT INTO t VALUES (1);\nINSERT INTO nowhere VALUES (1);\n",
	}
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db, err := sqldb.Open(t.Context(), url, files.FS())
		if err == nil {
			_ = db.Close()
			t.Fatal("Open with a broken migration succeeded")
		}
		if !strings.Contains(err.Error(), "nowhere") {
			t.Errorf("Open: %v; want the failing statement's error", err)
		}
		db, err = sqldb.Open(t.Context(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if n := count(t, db, "t"); n != 1 {
			t.Errorf("the broken migration's first statement ran %d times, want once", n)
		}
	})
}

func TestInTx(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name      string
		fn        func(ctx context.Context, db *sqldb.DB, tx *sql.Tx) error
		wantErr   error
		wantPanic bool
		wantRows  int
	}{
		{
			name: "commit",
			fn: func(ctx context.Context, db *sqldb.DB, tx *sql.Tx) error {
				return insertWidget(ctx, tx, db, "a", "a")
			},
			wantRows: 1,
		},
		{
			name: "rollback on error",
			fn: func(ctx context.Context, db *sqldb.DB, tx *sql.Tx) error {
				if err := insertWidget(ctx, tx, db, "a", "a"); err != nil {
					return err
				}
				return errBoom
			},
			wantErr: errBoom,
		},
		{
			name: "rollback on panic",
			fn: func(ctx context.Context, db *sqldb.DB, tx *sql.Tx) error {
				if err := insertWidget(ctx, tx, db, "a", "a"); err != nil {
					return err
				}
				panic("boom")
			},
			wantPanic: true,
		},
		{
			name: "rollback after failed statement",
			fn: func(ctx context.Context, db *sqldb.DB, tx *sql.Tx) error {
				if err := insertWidget(ctx, tx, db, "a", "a"); err != nil {
					return err
				}
				return insertWidget(ctx, tx, db, "a", "again")
			},
		},
	}
	sqldbtest.Run(t, func(t *testing.T, url string) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				db := open(t, url)
				if _, err := db.ExecContext(t.Context(), "DELETE FROM widgets"); err != nil {
					t.Fatal(err)
				}
				var err error
				panicked := func() (p bool) {
					defer func() { p = recover() != nil }()
					err = db.InTx(t.Context(), func(tx *sql.Tx) error { return tt.fn(t.Context(), db, tx) })
					return false
				}()
				if panicked != tt.wantPanic {
					t.Fatalf("panicked = %v, want %v", panicked, tt.wantPanic)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == nil && tt.wantRows > 0 && err != nil {
					t.Errorf("err = %v, want nil", err)
				}
				if got := count(t, db, "widgets"); got != tt.wantRows {
					t.Errorf("widgets = %d, want %d", got, tt.wantRows)
				}
			})
		}
	})
}

// TestConcurrentWriters is the reason SQLite gets one pooled connection:
// many goroutines writing at once must all succeed, none with SQLITE_BUSY.
func TestConcurrentWriters(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url)
		const writers = 32
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for i := range writers {
			wg.Go(func() {
				errs <- db.InTx(t.Context(), func(tx *sql.Tx) error {
					var n int
					if err := tx.QueryRowContext(t.Context(), "SELECT count(*) FROM widgets").Scan(&n); err != nil {
						return err
					}
					return insertWidget(t.Context(), tx, db, fmt.Sprint("w", i), fmt.Sprint("name", i))
				})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("writer: %v", err)
			}
		}
		if got := count(t, db, "widgets"); got != writers {
			t.Errorf("widgets = %d, want %d", got, writers)
		}
	})
}

func TestIsUniqueViolation(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url)
		ctx := t.Context()
		if err := insertWidget(ctx, db, db, "w1", "one"); err != nil {
			t.Fatal(err)
		}
		exec := func(q string, args ...any) error {
			_, err := db.ExecContext(ctx, db.Rebind(q), args...)
			return err
		}
		tests := []struct {
			name string
			err  error
			want bool
		}{
			{name: "nil", err: nil, want: false},
			{name: "plain error", err: errors.New("unique"), want: false},
			{name: "unique index", err: insertWidget(ctx, db, db, "w2", "one"), want: true},
			{name: "primary key", err: insertWidget(ctx, db, db, "w1", "other"), want: true},
			{name: "wrapped", err: fmt.Errorf("store: %w", insertWidget(ctx, db, db, "w1", "other")), want: true},
			{name: "foreign key", err: exec("INSERT INTO parts (id, widget_id) VALUES (?, ?)", "p1", "missing"), want: false},
			{name: "not null", err: exec("INSERT INTO widgets (id) VALUES (?)", "w3"), want: false},
			{name: "syntax", err: exec("INSERT INTO nowhere VALUES (1)"), want: false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.want && tt.err == nil {
					t.Fatal("statement unexpectedly succeeded")
				}
				if got := sqldb.IsUniqueViolation(tt.err); got != tt.want {
					t.Errorf("IsUniqueViolation(%v) = %v, want %v", tt.err, got, tt.want)
				}
			})
		}
	})
}

func TestRebind(t *testing.T) {
	tests := []struct {
		name  string
		query string
		want  string
	}{
		{name: "none", query: "SELECT 1", want: "SELECT 1"},
		{name: "several", query: "SELECT * FROM t WHERE a = ? AND b > ? LIMIT ?", want: "SELECT * FROM t WHERE a = $1 AND b > $2 LIMIT $3"},
		{name: "string literal", query: "SELECT '?', ? FROM t", want: "SELECT '?', $1 FROM t"},
		{name: "escaped quote", query: "SELECT 'it''s ?', ?", want: "SELECT 'it''s ?', $1"},
		{name: "quoted identifier", query: `SELECT "a?b" FROM t WHERE x = ?`, want: `SELECT "a?b" FROM t WHERE x = $1`},
		{name: "line comment", query: "SELECT ? -- why?\nFROM t WHERE x = ?", want: "SELECT $1 -- why?\nFROM t WHERE x = $2"},
		{name: "block comment", query: "SELECT /* ? */ ?", want: "SELECT /* ? */ $1"},
		{name: "unterminated literal", query: "SELECT ?, 'oops ?", want: "SELECT $1, 'oops ?"},
		{name: "unterminated comment", query: "SELECT ? /* ?", want: "SELECT $1 /* ?"},
		{name: "trailing line comment", query: "SELECT ? -- ?", want: "SELECT $1 -- ?"},
		// These were rewritten inside literals and comments.
		{name: "escape string", query: `SELECT E'it\'s ?', ?`, want: `SELECT E'it\'s ?', $1`},
		{name: "escape string, lower case", query: `SELECT e'\\', ? WHERE x = e'\'?'`, want: `SELECT e'\\', $1 WHERE x = e'\'?'`},
		{name: "not an escape string", query: `SELECT name'?', ?`, want: `SELECT name'?', $1`},
		{name: "dollar quoted", query: "SELECT $$it's ?$$, ?", want: "SELECT $$it's ?$$, $1"},
		{name: "tagged dollar quote", query: "SELECT $fn$ $$ ? $$ $fn$, ?", want: "SELECT $fn$ $$ ? $$ $fn$, $1"},
		{name: "unterminated dollar quote", query: "SELECT ?, $$ ?", want: "SELECT $1, $$ ?"},
		{name: "positional parameter is no quote", query: "SELECT $1, ?", want: "SELECT $1, $1"},
		{name: "nested block comment", query: "SELECT /* a /* ? */ ? */ ?", want: "SELECT /* a /* ? */ ? */ $1"},
		{name: "jsonb operators", query: "SELECT data ?? 'k', data ??| ?, data ??& ? FROM t WHERE id = ?", want: "SELECT data ? 'k', data ?| $1, data ?& $2 FROM t WHERE id = $3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sqldb.Rebind(sqldb.Postgres, tt.query); got != tt.want {
				t.Errorf("Rebind(Postgres, %q) = %q, want %q", tt.query, got, tt.want)
			}
			if got := sqldb.Rebind(sqldb.SQLite, tt.query); got != tt.query {
				t.Errorf("Rebind(SQLite, %q) = %q, want it unchanged", tt.query, got)
			}
		})
	}
}

// TestMigrateKeepsItsOwnHistory applies a second set of migrations to a
// service's database, as kit/events does with its outbox: each set has its
// own version table, so neither mistakes the other's versions for its own.
func TestMigrateKeepsItsOwnHistory(t *testing.T) {
	extra := fstest.MapFS{
		"00001_extra.sql": {Data: []byte("-- +goose Up\nCREATE TABLE extra (id TEXT PRIMARY KEY);\n-- +goose Down\nDROP TABLE extra;\n")},
	}
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url, sqldb.WithMigrationTable("widget_goose_db_version"))
		tests := []struct {
			name    string
			fsys    fs.FS
			table   string
			wantErr bool
		}{
			{name: "first run", fsys: extra, table: "extra_goose_db_version"},
			{name: "again is a no-op", fsys: extra, table: "extra_goose_db_version"},
			{name: "in a migrations directory", fsys: fstest.MapFS{"migrations/00001_extra.sql": extra["00001_extra.sql"]}, table: "extra_goose_db_version"},
			{name: "no table name", fsys: extra, table: "", wantErr: true},
		}
		for _, tt := range tests {
			err := db.Migrate(t.Context(), tt.fsys, tt.table)
			if (err != nil) != tt.wantErr {
				t.Fatalf("%s: Migrate = %v, want error %v", tt.name, err, tt.wantErr)
			}
		}
		if got := count(t, db, "extra"); got != 0 {
			t.Errorf("extra rows = %d, want 0", got)
		}
		// The service's own history is untouched: version 1 of the extra
		// set did not count as its version 1, and reopening finds nothing
		// pending.
		if got := count(t, db, "widget_goose_db_version"); got < 2 {
			t.Errorf("widget versions = %d, want at least 2", got)
		}
		again := open(t, url, sqldb.WithMigrationTable("widget_goose_db_version"))
		if err := again.Migrate(t.Context(), extra, "extra_goose_db_version"); err != nil {
			t.Errorf("Migrate after reopen: %v", err)
		}
	})
}

// TestMigrateLogs: Migrate's migrations (kit/events' outbox and inbox in
// every service) logged nothing, whatever logger Open was given.
func TestMigrateLogs(t *testing.T) {
	extra := fstest.MapFS{
		"00001_extra.sql": {Data: []byte("-- +goose Up\nCREATE TABLE extra (id TEXT PRIMARY KEY);\n-- +goose Down\nDROP TABLE extra;\n")},
	}
	sqldbtest.Run(t, func(t *testing.T, url string) {
		var logged bytes.Buffer // goose logs from the goroutine that migrates
		db := open(t, url, sqldb.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
		if !strings.Contains(logged.String(), "00001_widgets.sql") {
			t.Fatalf("Open's migrations logged %q, want the file applied", logged.String())
		}
		if err := db.Migrate(t.Context(), extra, "extra_goose_db_version"); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logged.String(), "00001_extra.sql") {
			t.Errorf("Migrate's migration is not in the log:\n%s", logged.String())
		}
		// The ones applied before a failure are logged too.
		failing := fstest.MapFS{
			"00001_fine.sql":   {Data: []byte("-- +goose Up\nCREATE TABLE fine (id TEXT PRIMARY KEY);\n")},
			"00002_broken.sql": {Data: []byte("-- +goose Up\nCREATE TABLE broken (;\n")},
		}
		if err := db.Migrate(t.Context(), failing, "failing_goose_db_version"); err == nil {
			t.Fatal("a broken migration was applied")
		}
		if !strings.Contains(logged.String(), "00001_fine.sql") {
			t.Errorf("the migration applied before the one that failed is not in the log:\n%s", logged.String())
		}
	})
}

// conflictErrors makes the database refuse a transaction for losing a race,
// each way the dialect has, and returns those errors by name.
func conflictErrors(t *testing.T, url string, db *sqldb.DB) map[string]error {
	t.Helper()
	ctx := t.Context()
	for _, id := range []string{"c1", "c2"} {
		if err := insertWidget(ctx, db, db, id, id); err != nil {
			t.Fatal(err)
		}
	}
	rename := func(q interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}, id string) error {
		_, err := q.ExecContext(ctx, db.Rebind("UPDATE widgets SET name = name || '+' WHERE id = ?"), id)
		return err
	}
	if db.Dialect == sqldb.SQLite {
		// A second connection that does not wait for the write lock.
		path := strings.TrimPrefix(url, "sqlite:")
		other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		holder, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()
		if _, err := holder.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		defer holder.ExecContext(ctx, "ROLLBACK")
		return map[string]error{"busy": rename(other, "c1")}
	}
	// PostgreSQL: a serializable transaction whose row changed after its
	// snapshot, and two transactions locking two rows in opposite orders.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT name FROM widgets WHERE id = 'c1'"); err != nil {
		t.Fatal(err)
	}
	if err := rename(db, "c1"); err != nil {
		t.Fatal(err)
	}
	serialization := rename(tx, "c1")

	a, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Rollback()
	b, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback()
	if err := rename(a, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := rename(b, "c2"); err != nil {
		t.Fatal(err)
	}
	// One of the two is chosen to fail; the other then goes on.
	errA := make(chan error, 1)
	go func() { errA <- rename(a, "c2") }() // waits for b
	errB := rename(b, "c1")                 // closes the cycle
	deadlock := errors.Join(errB, <-errA)
	if err := a.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := b.Rollback(); err != nil {
		t.Fatal(err)
	}

	// A lock_timeout (an operator's choice) passing while another
	// transaction holds the row.
	holder, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if err := rename(holder, "c1"); err != nil {
		t.Fatal(err)
	}
	waiter, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Rollback()
	if _, err := waiter.ExecContext(ctx, "SET LOCAL lock_timeout = '20ms'"); err != nil {
		t.Fatal(err)
	}
	lockTimeout := rename(waiter, "c1")
	return map[string]error{"serialization failure": serialization, "deadlock": deadlock, "lock timeout": lockTimeout}
}

func TestIsConflict(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url)
		if err := insertWidget(t.Context(), db, db, "u1", "unique"); err != nil {
			t.Fatal(err)
		}
		type test struct {
			name string
			err  error
			want bool
		}
		tests := []test{
			{name: "nil", err: nil, want: false},
			{name: "plain error", err: errors.New("deadlock detected"), want: false},
			{name: "unique violation", err: insertWidget(t.Context(), db, db, "u2", "unique"), want: false},
		}
		if db.Dialect == sqldb.SQLite {
			// A table dropped while the same connection reads it:
			// SQLITE_LOCKED, which no retry resolves.
			err := db.InTx(t.Context(), func(tx *sql.Tx) error {
				rows, err := tx.QueryContext(t.Context(), "SELECT id FROM widgets")
				if err != nil {
					return err
				}
				defer rows.Close()
				rows.Next()
				_, err = tx.ExecContext(t.Context(), "DROP TABLE widgets")
				return err
			})
			if err == nil {
				t.Fatal("DROP TABLE under an open read succeeded")
			}
			tests = append(tests, test{name: "table locked by its own connection", err: err, want: false})
		}
		for name, err := range conflictErrors(t, url, db) {
			if err == nil {
				t.Fatalf("%s: the database raised no error", name)
			}
			tests = append(tests, test{name: name, err: fmt.Errorf("store: %w", err), want: true})
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := sqldb.IsConflict(tt.err); got != tt.want {
					t.Errorf("IsConflict(%v) = %v, want %v", tt.err, got, tt.want)
				}
			})
		}
	})
}

// TestIsUnavailable: a database that is down, restarting, out of
// connection slots or under an operator's statement_timeout is an outage
// to retry, not a bug; the caller's own deadline and the database's
// answers (a unique key taken, no rows) are neither.
func TestIsUnavailable(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := open(t, url)
		ctx := t.Context()
		if err := insertWidget(ctx, db, db, "u1", "unique"); err != nil {
			t.Fatal(err)
		}
		deadline, cancel := context.WithTimeout(ctx, time.Nanosecond)
		defer cancel()
		<-deadline.Done()
		_, deadlineErr := db.ExecContext(deadline, "SELECT 1")
		tests := []struct {
			name string
			err  error
			want bool
		}{
			{name: "nil", err: nil},
			{name: "plain error", err: errors.New("connection refused")},
			{name: "no rows", err: db.QueryRowContext(ctx, db.Rebind("SELECT id FROM widgets WHERE id = ?"), "none").Scan(new(string))},
			{name: "unique violation", err: insertWidget(ctx, db, db, "u2", "unique")},
			{name: "caller's deadline", err: fmt.Errorf("store: %w", deadlineErr)},
			// What BEGIN on a pooled connection the server closed says;
			// TestDatabaseOutage in services/user meets it now and then.
			{name: "connection closed under the pool", err: fmt.Errorf("sqldb: begin: %w", pgconn.ErrConnClosed), want: true},
		}
		if db.Dialect == sqldb.Postgres {
			for name, err := range outageErrors(t, url, db) {
				if err == nil {
					t.Fatalf("%s: the database raised no error", name)
				}
				tests = append(tests, struct {
					name string
					err  error
					want bool
				}{name: name, err: fmt.Errorf("store: %w", err), want: true})
			}
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.err == nil && tt.name != "nil" {
					t.Fatal("the database raised no error")
				}
				if got := sqldb.IsUnavailable(tt.err); got != tt.want {
					t.Errorf("IsUnavailable(%v) = %v, want %v", tt.err, got, tt.want)
				}
				if sqldb.IsConflict(tt.err) && tt.want {
					t.Errorf("IsConflict(%v) = true: an outage is no lost race", tt.err)
				}
			})
		}
	})
}

// outageErrors makes PostgreSQL fail the ways IsUnavailable must
// recognise: nothing listening, the backend terminated under a
// connection, and a statement_timeout.
func outageErrors(t *testing.T, rawURL string, db *sqldb.DB) map[string]error {
	t.Helper()
	ctx := t.Context()
	errs := map[string]error{}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	u, err := neturl.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = closedAddr
	down, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	errs["nothing listening"] = down.PingContext(ctx)

	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pid int
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	errs["backend terminated"] = conn.QueryRowContext(ctx, "SELECT 1").Scan(new(int))

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SET LOCAL statement_timeout = '20ms'"); err != nil {
		t.Fatal(err)
	}
	_, errs["statement timeout"] = tx.ExecContext(ctx, "SELECT pg_sleep(5)")
	return errs
}
