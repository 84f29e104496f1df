// Package sqldb opens a service's own database, SQLite or PostgreSQL, from a
// URL, applies the service's embedded goose migrations, and smooths over the
// few differences between the two dialects that service stores meet:
// placeholders (Rebind), transactions (InTx) and unique-key violations
// (IsUniqueViolation).
//
// Stores write portable SQL: `?` placeholders, BIGINT unix microseconds for
// timestamps, BIGINT minor units plus a TEXT currency for money, TEXT ids.
package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the SQL database behind a DB.
type Dialect string

// The dialects Open understands.
const (
	// SQLite is modernc.org/sqlite: pure Go, one file per service, the
	// embedded default.
	SQLite Dialect = "sqlite"
	// Postgres is PostgreSQL through pgx, for distributed deployments.
	Postgres Dialect = "postgres"
)

// DefaultMigrationTable is the goose version table used when no
// WithMigrationTable option is given.
const DefaultMigrationTable = "goose_db_version"

// DB is an open database with its dialect. The embedded *sql.DB is safe for
// concurrent use; Close it when done.
type DB struct {
	*sql.DB
	// Dialect is the database behind DB; it decides how Rebind rewrites queries.
	Dialect Dialect
	// group commits concurrent InTx calls together on SQLite; nil on
	// PostgreSQL, whose pool runs transactions side by side.
	group *txGroup
	// logger is Open's WithLogger, for Migrate's migrations too.
	logger *slog.Logger
}

// Option configures Open.
type Option func(*options)

type options struct {
	table  string
	logger *slog.Logger
}

// WithMigrationTable names the table in which goose records applied
// migrations. Give each service its own (for example "user_goose_db_version")
// so services can share one PostgreSQL database or schema without mistaking
// each other's migration history for their own.
func WithMigrationTable(name string) Option {
	return func(o *options) { o.table = name }
}

// WithLogger logs each migration applied to logger, Open's and later
// Migrate's (a line per file: its name, version and version table). Without
// it, migrations run silently: errors are still returned.
func WithLogger(logger *slog.Logger) Option {
	return func(o *options) { o.logger = logger }
}

// Open connects to the database named by rawURL and applies the goose
// migrations in migrations, then returns the ready DB.
//
// rawURL is one of
//
//	postgres://user@host:5432/db?sslmode=disable   (also postgresql://)
//	sqlite:PATH            a file, created with its directory if missing (sqlite:///abs/path also works)
//	sqlite::memory:        a private in-memory database
//	PATH                   a plain file path is SQLite too
//
// SQLite connections use WAL, busy_timeout(5000), foreign_keys(1) and
// BEGIN IMMEDIATE transactions, and the pool holds a single connection:
// SQLite admits one writer at a time anyway, and queuing in database/sql
// rather than in SQLite's busy handler means concurrent writers never see
// SQLITE_BUSY. The price is that code inside InTx must use the *sql.Tx it is
// given, never the DB, or it waits for itself. Concurrent InTx calls on
// SQLite share commits (see InTx).
//
// migrations holds goose .sql files at its root (or in a "migrations"
// directory at its root, as //go:embed migrations/*.sql gives); nil skips
// migrating. On PostgreSQL concurrent Opens serialise their migrations with
// an advisory lock.
func Open(ctx context.Context, rawURL string, migrations fs.FS, opts ...Option) (*DB, error) {
	o := options{table: DefaultMigrationTable}
	for _, opt := range opts {
		opt(&o)
	}
	dialect, driver, dsn, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	maxConns := defaultPostgresConns
	if dialect == Postgres {
		if dsn, maxConns, err = poolSize(dsn); err != nil {
			return nil, err
		}
	}
	if dialect == SQLite {
		if err := makeParentDir(dsn); err != nil {
			return nil, err
		}
		// Setting WAL mode on a new file and the first migrations take
		// locks for which SQLite's busy handler does not always wait, so
		// Opens in one process take turns. (Other processes opening the
		// same file at the same moment are covered by migrate's retry.)
		select {
		case sqliteOpening <- struct{}{}:
			defer func() { <-sqliteOpening }()
		case <-ctx.Done():
			return nil, fmt.Errorf("sqldb: open sqlite: %w", ctx.Err())
		}
	}
	var sqlDB *sql.DB
	if dialect == SQLite {
		// pgx caches prepared statements itself; modernc.org/sqlite
		// compiles every query anew unless the connection is wrapped.
		connector, cerr := newStmtCacheConnector(dsn, stmtCacheSize)
		if cerr != nil {
			return nil, fmt.Errorf("sqldb: open %s: %w", dialect, cerr)
		}
		sqlDB = sql.OpenDB(connector)
	} else if sqlDB, err = sql.Open(driver, dsn); err != nil {
		return nil, fmt.Errorf("sqldb: open %s: %w", dialect, err)
	}
	db := &DB{DB: sqlDB, Dialect: dialect, logger: o.logger}
	if dialect == SQLite {
		db.group = &txGroup{db: sqlDB}
	}
	db.configurePool(maxConns)
	if err := db.connect(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqldb: connect to %s: %w", dialect, err)
	}
	if migrations != nil {
		if err := db.migrate(ctx, migrations, o); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	return db, nil
}

// sqliteOpening is a lock, taken by sending and released by receiving, that
// serialises SQLite Opens in this process.
var sqliteOpening = make(chan struct{}, 1)

// parseURL maps a database URL to its dialect, database/sql driver name and DSN.
func parseURL(rawURL string) (Dialect, string, string, error) {
	switch {
	case rawURL == "":
		return "", "", "", errors.New("sqldb: empty database URL")
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return Postgres, "pgx", rawURL, nil
	}
	path := rawURL
	if rest, ok := strings.CutPrefix(path, "sqlite:"); ok {
		path = rest
		if rest, ok := strings.CutPrefix(path, "//"); ok {
			path = rest
		}
	} else if i := strings.Index(path, "://"); i > 0 {
		return "", "", "", fmt.Errorf("sqldb: unsupported database URL scheme %q", path[:i])
	}
	path, query, _ := strings.Cut(path, "?")
	if path == "" {
		return "", "", "", fmt.Errorf("sqldb: no SQLite path in %q", rawURL)
	}
	if strings.Contains(path, "=") && strings.ContainsAny(path, " \t") {
		// "host=db user=app dbname=app", a PostgreSQL key/value DSN,
		// would otherwise open (and create) a SQLite file of that name:
		// a service started on an empty database instead of an error.
		return "", "", "", errors.New("sqldb: database URL looks like a PostgreSQL key/value DSN; use a postgres:// URL")
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return "", "", "", fmt.Errorf("sqldb: SQLite URL query: %w", err)
	}
	// The caller's own parameters win; these are the defaults. A caller
	// sets a PRAGMA through its key, the key's alias in modernc.org/sqlite,
	// or a _pragma value, which the driver applies before the keys: a
	// default key added beside a _pragma would silently override it.
	setDefault := func(key, value, pragma string, alias string) {
		if params.Has(key) || (alias != "" && params.Has(alias)) || pragmaGiven(params["_pragma"], pragma) {
			return
		}
		params.Set(key, value)
	}
	setDefault("_busy_timeout", "5000", "busy_timeout", "_timeout")
	setDefault("_journal_mode", "WAL", "journal_mode", "_journal")
	setDefault("_foreign_keys", "1", "foreign_keys", "_fk")
	setDefault("_txlock", "immediate", "", "")
	// NORMAL is durable across application crashes in WAL mode and much
	// faster than FULL; only an OS crash can lose the last commits.
	setDefault("_synchronous", "NORMAL", "synchronous", "_sync")
	return SQLite, "sqlite", path + "?" + params.Encode(), nil
}

// pragmaGiven reports whether one of the _pragma values of a SQLite DSN,
// "name(value)" or "name=value", sets the PRAGMA name.
func pragmaGiven(values []string, name string) bool {
	if name == "" {
		return false
	}
	for _, v := range values {
		rest, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(v)), name)
		if ok && (rest == "" || strings.ContainsAny(rest[:1], "(= ")) {
			return true
		}
	}
	return false
}

// sqliteBusyWait bounds how long Open waits for another process that
// holds a new SQLite file's lock.
const sqliteBusyWait = 5 * time.Second

// connect opens the first connection. On SQLite it tries again while
// another process holds the lock: switching a new file to WAL needs one
// for which SQLite's busy handler does not wait, so processes opening one
// new file at the same moment would otherwise fail with SQLITE_BUSY.
func (db *DB) connect(ctx context.Context) error {
	deadline := time.Now().Add(sqliteBusyWait)
	backoff := 5 * time.Millisecond
	for {
		err := db.PingContext(ctx)
		if err == nil || db.Dialect != SQLite || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY (any extended code).
func isBusy(err error) bool {
	var coded interface{ Code() int }
	return errors.As(err, &coded) && coded.Code()&0xff == 5
}

// makeParentDir creates the directory of a SQLite database file, so a fresh
// data directory needs no set-up step.
func makeParentDir(dsn string) error {
	path, _, _ := strings.Cut(dsn, "?")
	if path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("sqldb: create database directory: %w", err)
	}
	return nil
}

// defaultPostgresConns is the PostgreSQL pool's size without
// pool_max_conns.
const defaultPostgresConns = 20

// poolSize takes pool_max_conns, the pool's size, out of a postgres://
// URL (pgx would send it to the server as a setting, which the server
// refuses). The name is pgxpool's. Five services with pools of the
// default 20 on one server would take all of PostgreSQL's default 100
// connections; this is how to share a server, or to size a pool to what a
// connection pooler in front of it admits.
func poolSize(rawURL string) (string, int, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// Not wrapped: url.Error repeats the URL, password and all.
		return "", 0, errors.New("sqldb: the PostgreSQL URL does not parse")
	}
	q := u.Query()
	if !q.Has("pool_max_conns") {
		return rawURL, defaultPostgresConns, nil
	}
	n, err := strconv.Atoi(q.Get("pool_max_conns"))
	if err != nil || n < 1 || len(q["pool_max_conns"]) > 1 {
		return "", 0, fmt.Errorf("sqldb: pool_max_conns is %q, want one whole number of at least 1", q.Get("pool_max_conns"))
	}
	q.Del("pool_max_conns")
	u.RawQuery = q.Encode()
	return u.String(), n, nil
}

// configurePool sizes the connection pool for the dialect; maxConns is
// the PostgreSQL pool's size.
func (db *DB) configurePool(maxConns int) {
	switch db.Dialect {
	case SQLite:
		// One connection: see Open. It must never be recycled either, or an
		// in-memory database would vanish with it.
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
	case Postgres:
		db.SetMaxOpenConns(maxConns)
		db.SetMaxIdleConns(max(1, maxConns/2))
		// Recycle connections so load spreads again after a failover or
		// a connection pooler restart.
		db.SetConnMaxLifetime(30 * time.Minute)
		db.SetConnMaxIdleTime(5 * time.Minute)
	}
}

// Migrate applies every pending goose migration in fsys (.sql files at its
// root or in a "migrations" directory), recording them in the version table
// named table. Open migrates a service's own schema; Migrate is for a second
// set of tables in the same database with a history of its own, such as
// kit/events' outbox and inbox, which every service that publishes or
// consumes events shares. Concurrent callers on PostgreSQL take turns.
func (db *DB) Migrate(ctx context.Context, fsys fs.FS, table string) error {
	if table == "" {
		return errors.New("sqldb: migrate: empty version table name")
	}
	return db.migrate(ctx, fsys, options{table: table, logger: db.logger})
}

// migrate applies every pending goose migration in fsys.
func (db *DB) migrate(ctx context.Context, fsys fs.FS, o options) error {
	fsys, err := migrationRoot(fsys)
	if err != nil {
		return err
	}
	popts := []goose.ProviderOption{
		goose.WithTableName(o.table),
		// goose's own log (verbose) has a line per SQL statement, with the
		// statement, and one per start saying nothing is pending: each
		// migration applied is logged below instead.
		goose.WithSlog(slog.New(slog.DiscardHandler)),
		// Only this service's files: Go migrations registered globally by
		// another package linked into the same binary must not run here.
		goose.WithDisableGlobalRegistry(true),
	}
	gooseDialect := goose.DialectSQLite3
	if db.Dialect == Postgres {
		gooseDialect = goose.DialectPostgres
		locker, err := db.postgresLocker(ctx, o.table)
		if err != nil {
			return err
		}
		popts = append(popts, goose.WithSessionLocker(locker))
	}
	provider, err := goose.NewProvider(gooseDialect, db.DB, fsys, popts...)
	if err != nil {
		return fmt.Errorf("sqldb: load migrations: %w", err)
	}
	// SQLite has no advisory lock, so two processes opening one file can
	// both see a migration pending and race to apply it; the loser's
	// transaction fails and rolls back whole. Such a failure is retried
	// only when the other side has since committed the version that
	// failed (or the database was busy), so retrying is bounded by the
	// number of migrations. Any other failure is returned as it is: a
	// migration that is simply broken, and above all one run outside a
	// transaction, which run again would repeat the statements that did
	// succeed and report their second failure instead of the first.
	attempts := 1
	if db.Dialect == SQLite {
		attempts += len(provider.ListSources())
	}
	for i := 1; ; i++ {
		applied, err := provider.Up(ctx)
		var partial *goose.PartialError
		if errors.As(err, &partial) {
			applied = partial.Applied // those before the one that failed
		}
		if o.logger != nil {
			for _, r := range applied {
				o.logger.InfoContext(ctx, "migration applied", "file", filepath.Base(r.Source.Path),
					"version", r.Source.Version, "version_table", o.table, "duration", r.Duration)
			}
		}
		if err == nil {
			return nil
		}
		if i >= attempts || ctx.Err() != nil || !lostMigrationRace(ctx, provider, err) {
			return fmt.Errorf("sqldb: migrate: %w", err)
		}
		if pending, perr := provider.HasPending(ctx); perr == nil && !pending {
			return nil
		}
	}
}

// lostMigrationRace reports whether err, from goose's Up, is what losing a
// race with another process applying the same migration looks like: the
// database was busy, or the version that failed is applied now.
func lostMigrationRace(ctx context.Context, provider *goose.Provider, err error) bool {
	if isBusy(err) {
		return true
	}
	var partial *goose.PartialError
	if !errors.As(err, &partial) || partial.Failed == nil || partial.Failed.Source == nil {
		return false
	}
	current, verr := provider.GetDBVersion(ctx)
	return verr == nil && current >= partial.Failed.Source.Version
}

// postgresLocker returns an advisory-lock locker whose key is derived from the
// current schema and the version table, so that only Opens migrating the same
// tables wait for each other (test schemas, other services do not).
func (db *DB) postgresLocker(ctx context.Context, table string) (lock.SessionLocker, error) {
	var schema sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return nil, fmt.Errorf("sqldb: read current schema: %w", err)
	}
	if !schema.Valid {
		// PostgreSQL would refuse the first CREATE TABLE with "no schema
		// has been selected to create in"; say why before anything runs.
		return nil, errors.New("sqldb: no schema to migrate into: none of the schemas in the connection's search_path exists (create it, or set search_path in the database URL)")
	}
	h := fnv.New64a()
	_, _ = io.WriteString(h, schema.String+"."+table)
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(int64(h.Sum64())),
		lock.WithLockTimeout(1, 300), // poll every second for up to 5 minutes
	)
	if err != nil {
		return nil, fmt.Errorf("sqldb: migration lock: %w", err)
	}
	return locker, nil
}

// migrationRoot returns fsys, or its "migrations" directory when the .sql
// files live there rather than at the root.
func migrationRoot(fsys fs.FS) (fs.FS, error) {
	root, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("sqldb: list migrations: %w", err)
	}
	if len(root) > 0 {
		return fsys, nil
	}
	if fi, err := fs.Stat(fsys, "migrations"); err == nil && fi.IsDir() {
		return fs.Sub(fsys, "migrations")
	}
	return fsys, nil
}

// Rebind rewrites the `?` placeholders of query into the dialect's own: $1,
// $2, … for PostgreSQL, unchanged for SQLite. Question marks inside string
// literals (including E'…' with backslash escapes and $tag$…$tag$ dollar
// quoting), quoted identifiers and comments (nested block comments too) are
// left alone. For PostgreSQL's own ? operators (jsonb's ?, ?| and ?&),
// write ?? (??| and ??&): it becomes a single ?, not a placeholder.
func (db *DB) Rebind(query string) string {
	return Rebind(db.Dialect, query)
}

// Rebind rewrites the `?` placeholders of query for dialect; see DB.Rebind.
func Rebind(dialect Dialect, query string) string {
	if dialect != Postgres || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); {
		c := query[i]
		var skip int // bytes copied as they are, from i
		switch {
		case c == '\'' && i > 0 && (query[i-1] == 'E' || query[i-1] == 'e') && (i == 1 || !identByte(query[i-2])):
			skip = escapedLiteral(query[i:])
		case c == '\'' || c == '"':
			// A doubled quote is an escaped quote: it simply reopens the
			// literal on the next round.
			if end := strings.IndexByte(query[i+1:], c); end >= 0 {
				skip = end + 2
			} else {
				skip = len(query) - i
			}
		case c == '$' && (i == 0 || !identByte(query[i-1])):
			skip = dollarQuoted(query[i:])
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			if end := strings.IndexByte(query[i:], '\n'); end >= 0 {
				skip = end + 1
			} else {
				skip = len(query) - i
			}
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			skip = blockComment(query[i:])
		case c == '?' && i+1 < len(query) && query[i+1] == '?':
			b.WriteByte('?')
			i += 2
			continue
		case c == '?':
			n++
			fmt.Fprintf(&b, "$%d", n)
			i++
			continue
		}
		if skip == 0 {
			skip = 1
		}
		b.WriteString(query[i : i+skip])
		i += skip
	}
	return b.String()
}

// identByte reports whether c may be part of an SQL identifier or number.
func identByte(c byte) bool {
	return c == '_' || c == '$' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c >= 0x80
}

// escapedLiteral returns the length of the E'…' literal q starts with (at
// its quote), in which a backslash escapes the next byte; all of q when it
// is not closed.
func escapedLiteral(q string) int {
	for i := 1; i < len(q); i++ {
		switch q[i] {
		case '\\':
			i++
		case '\'':
			return i + 1
		}
	}
	return len(q)
}

// dollarQuoted returns the length of the dollar-quoted string q starts
// with ($$…$$ or $tag$…$tag$), all of q when it is not closed, or 0 when
// q starts with no dollar quote (a $1 parameter, say).
func dollarQuoted(q string) int {
	end := 1
	for end < len(q) && q[end] != '$' {
		c := q[end]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c >= 0x80 || end > 1 && '0' <= c && c <= '9') {
			return 0
		}
		end++
	}
	if end >= len(q) {
		return 0
	}
	tag := q[:end+1]
	if close := strings.Index(q[len(tag):], tag); close >= 0 {
		return len(tag) + close + len(tag)
	}
	return len(q)
}

// blockComment returns the length of the /* … */ comment q starts with,
// nested comments included, as PostgreSQL reads them; all of q when it is
// not closed.
func blockComment(q string) int {
	depth := 0
	for i := 0; i+1 < len(q); i++ {
		switch {
		case q[i] == '/' && q[i+1] == '*':
			depth++
			i++
		case q[i] == '*' && q[i+1] == '/':
			depth--
			i++
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(q)
}

// InTx runs fn in a transaction, committing when fn returns nil and rolling
// back when it returns an error or panics (the panic is then re-raised).
// fn must use tx for every statement; see Open for why using the DB inside
// fn can block on SQLite. When InTx returns nil, fn's work is committed.
//
// On SQLite, calls that arrive while another holds the connection share
// its transaction (group commit): each fn runs in turn, on its caller's
// goroutine (the first as alone, each later one inside a savepoint that its
// error or panic rolls back to), and the calls whose fn succeeded return
// once the shared transaction is committed. So fn's work is atomic and
// isolated as in a transaction of its own run after those before it, whose
// work fn sees and which commits with fn's or not at all. Should the commit
// fail, every call in it fails. A statement of fn that has begun runs to its
// end even if ctx ends meanwhile (interrupting it would roll back the
// others' work with it); fn's next statement then fails with ctx's error.
// Two things a shared transaction cannot give: SQLite checks deferred
// constraints (DEFERRABLE INITIALLY DEFERRED, PRAGMA defer_foreign_keys) at
// the COMMIT, so one call's violation fails every call in it (keep them
// immediate, SQLite's default); and fn must not wait for another InTx
// call to return, which may be waiting for fn's transaction to commit.
func (db *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	if db.group != nil {
		return db.group.run(ctx, fn)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqldb: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		committed = true // nothing left to roll back
		return fmt.Errorf("sqldb: commit: %w", err)
	}
	committed = true
	return nil
}

// IsConflict reports whether err, or an error it wraps, says that the
// transaction lost a race with a concurrent one and was given up, so that
// running it again may succeed: PostgreSQL's serialization_failure (40001,
// under REPEATABLE READ or SERIALIZABLE), deadlock_detected (40P01) and
// lock_not_available (55P03: a lock_timeout the operator set passed while
// a concurrent transaction held the row), SQLite's SQLITE_BUSY (the busy
// timeout passed waiting for the write lock) and
// SQLITE_LOCKED_SHAREDCACHE. Handlers answer it with apierr.Conflict
// rather than INTERNAL: it is no bug, and the client may simply retry.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", "55P03":
			return true
		}
		return false
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		// SQLITE_LOCKED alone comes, with a connection of one's own, from
		// the same connection (a table dropped while it is being read):
		// a bug, which running again repeats. Only its shared-cache form
		// is another connection's doing.
		return liteErr.Code()&0xff == sqlite3.SQLITE_BUSY || liteErr.Code() == sqlite3.SQLITE_LOCKED_SHAREDCACHE
	}
	return false
}

// IsUnavailable reports whether err, or an error it wraps, says that the
// database could not be reached or would not serve for now, with no bug
// on either side: the server is down, restarting or failing over
// (connection refused or lost; PostgreSQL's connection_exception class
// 08, admin_shutdown 57P01, crash_shutdown 57P02, cannot_connect_now
// 57P03), it has no connection slot left (too_many_connections 53300),
// or a statement_timeout the operator set ended the query
// (query_canceled 57014). Handlers answer it with UNAVAILABLE and
// RetryInfo rather than INTERNAL, so clients and balancers retry and
// alerts read it as an outage, not a bug.
func IsUnavailable(err error) bool {
	if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// The caller's own time ran out; the handler says so.
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "53300", "57P01", "57P02", "57P03", "57014":
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08")
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, pgconn.ErrConnClosed) {
		// ErrConnClosed: pgx found the pool's connection closed under it
		// (the server went away) as a statement or transaction began.
		return true
	}
	// A connection lost mid-statement: pgx returns the network error.
	var opErr *net.OpError
	return errors.As(err, &opErr) || errors.Is(err, io.ErrUnexpectedEOF)
}

// IsUniqueViolation reports whether err, or an error it wraps, is a unique
// or primary-key constraint violation in either dialect: how stores turn a
// lost race on a unique index into a domain error such as "email taken".
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505" // unique_violation
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return true
		}
	}
	return false
}
