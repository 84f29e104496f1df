package sqldb

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"net/url"
	"strings"

	"modernc.org/sqlite"
)

// stmtCacheSize bounds the prepared statements each SQLite connection keeps.
// A service's stores issue a few dozen distinct statements, so 128 holds
// them all while keeping a runaway of distinct texts (dynamic IN lists) from
// holding memory without bound.
const stmtCacheSize = 128

// stmtCacheConnector opens modernc.org/sqlite connections that reuse
// prepared statements.
//
// Why: modernc's conn implements ExecerContext and QueryerContext by
// compiling the SQL text on every call and finalizing it afterwards, and
// database/sql always takes that path for db.ExecContext, tx.QueryContext
// and friends. Compiling was about a fifth of the order path's CPU (see
// bench/README.md). Wrapping the conn keeps every store call site unchanged.
type stmtCacheConnector struct {
	inner driver.Connector
	size  int
	// begin starts a read-write transaction: BEGIN with the DSN's _txlock
	// mode, as the driver would.
	begin string
}

// newStmtCacheConnector returns a connector for the SQLite DSN dsn; the
// DSN's parameters (_pragma, _txlock, …) are still interpreted by the driver.
func newStmtCacheConnector(dsn string, size int) (driver.Connector, error) {
	inner, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	begin := "BEGIN"
	if _, query, ok := strings.Cut(dsn, "?"); ok {
		params, err := url.ParseQuery(query)
		if err != nil {
			return nil, err
		}
		if mode := params.Get("_txlock"); mode != "" {
			// The driver has vetted the mode (deferred, immediate or exclusive).
			begin += " " + strings.ToUpper(mode)
		}
	}
	return &stmtCacheConnector{inner: inner, size: size, begin: begin}, nil
}

// Connect implements driver.Connector.
func (c *stmtCacheConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ic, ok := dc.(sqliteConn)
	if !ok {
		_ = dc.Close()
		return nil, errors.New("sqldb: sqlite connection lacks the expected driver interfaces")
	}
	return &stmtCacheConn{
		sqliteConn: ic,
		begin:      c.begin,
		size:       c.size,
		lru:        list.New(),
		byQuery:    make(map[string]*list.Element),
	}, nil
}

// Driver implements driver.Connector.
func (c *stmtCacheConnector) Driver() driver.Driver { return c.inner.Driver() }

// sqliteConn is what database/sql uses of a modernc.org/sqlite conn, besides
// the ExecerContext and QueryerContext that stmtCacheConn replaces.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// stmtCacheConn is a SQLite connection with an LRU of prepared statements
// keyed by query text.
//
// No lock: database/sql uses a driver.Conn from one goroutine at a time and
// holds the connection's lock for driver calls on it, Rows.Close included.
type stmtCacheConn struct {
	sqliteConn
	begin   string // see stmtCacheConnector
	size    int
	lru     *list.List // of *cachedStmt, most recently used first
	byQuery map[string]*list.Element
	// shared is set from BeginTx to the end of a transaction that InTx's
	// group commit shares among callers: its statements run detached from
	// their caller's cancellation (see detach).
	shared bool
}

// cachedStmt is one cached statement.
type cachedStmt struct {
	query string
	stmt  sqliteStmt
	// busy is set while rows read from stmt are open: running stmt again
	// would reset it under them.
	busy bool
	// evicted is set when stmt left the cache while busy; closing its rows
	// then finalizes it.
	evicted bool
}

// sqliteStmt is what stmtCacheConn uses of a modernc.org/sqlite statement.
type sqliteStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// sqliteRows is what stmtCacheRows forwards of modernc.org/sqlite rows.
type sqliteRows interface {
	driver.Rows
	driver.RowsColumnTypeDatabaseTypeName
	driver.RowsColumnTypeLength
	driver.RowsColumnTypeNullable
	driver.RowsColumnTypePrecisionScale
	driver.RowsColumnTypeScanType
}

// Compile-time checks that the wrapper keeps the interfaces database/sql
// looks for.
var (
	_ driver.ExecerContext  = (*stmtCacheConn)(nil)
	_ driver.QueryerContext = (*stmtCacheConn)(nil)
	_ sqliteConn            = (*stmtCacheConn)(nil)
	_ sqliteStmt            = callerStmt{}
	_ sqliteRows            = (*stmtCacheRows)(nil)
)

// BeginTx implements driver.ConnBeginTx with cached BEGIN, COMMIT and
// ROLLBACK statements: the driver compiles and finalizes each of them for
// every transaction, which was 1% of the order path's CPU. Like the driver,
// it honours opts.ReadOnly only (a plain BEGIN) and no isolation levels
// (SQLite's transactions are serializable).
func (c *stmtCacheConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	begin := c.begin
	if opts.ReadOnly {
		begin = "BEGIN"
	}
	if _, err := c.ExecContext(ctx, begin, nil); err != nil {
		return nil, err
	}
	c.shared = ctx.Value(sharedTxKey{}) != nil
	return stmtCacheTx{c: c, ctx: context.WithoutCancel(ctx)}, nil
}

// sharedTxKey marks the context with which group commit begins a
// transaction that several InTx calls share.
type sharedTxKey struct{}

// withSharedTx marks ctx for BeginTx as beginning a shared transaction.
func withSharedTx(ctx context.Context) context.Context {
	return context.WithValue(ctx, sharedTxKey{}, true)
}

// detach returns the context a statement runs with: ctx itself, but inside
// a shared transaction ctx without its cancellation, once ctx has been
// checked.
//
// Why: the driver interrupts a statement whose context ends
// (sqlite3_interrupt), and SQLite answers an interrupted write inside a
// transaction by rolling the whole transaction back. A shared transaction
// holds other callers' work, which one caller's deadline or disconnect
// would then undo; detached, that caller's next statement fails with its
// context's error before it runs, and InTx rolls back to the caller's
// savepoint alone. The price: a statement that has begun is left to
// finish, however long it takes. Transactions a caller begins itself
// (DB.BeginTx) keep the interrupt; they hold nobody else's work.
func (c *stmtCacheConn) detach(ctx context.Context) (context.Context, error) {
	if !c.shared {
		return ctx, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

// stmtCacheTx is a transaction begun by stmtCacheConn.BeginTx.
type stmtCacheTx struct {
	c *stmtCacheConn
	// ctx is BeginTx's context without its cancellation: driver.Tx's
	// methods take none, and a COMMIT or ROLLBACK must not be cut off
	// halfway (database/sql itself rolls back when the caller's context
	// ends).
	ctx context.Context
}

// Commit implements driver.Tx. A COMMIT that fails may leave the
// transaction open (SQLITE_BUSY, say); it is rolled back then, as the
// driver does, and the ROLLBACK's own error (none is open) ignored.
func (t stmtCacheTx) Commit() error {
	defer t.end()
	_, err := t.c.ExecContext(t.ctx, "COMMIT", nil)
	if err != nil {
		_, _ = t.c.ExecContext(t.ctx, "ROLLBACK", nil)
	}
	return err
}

// Rollback implements driver.Tx.
func (t stmtCacheTx) Rollback() error {
	defer t.end()
	_, err := t.c.ExecContext(t.ctx, "ROLLBACK", nil)
	return err
}

// end marks the transaction over; database/sql calls Commit or Rollback
// once per transaction, and it ends either way.
func (t stmtCacheTx) end() { t.c.shared = false }

// ExecContext implements driver.ExecerContext with a cached statement.
func (c *stmtCacheConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	ctx, err := c.detach(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := c.acquire(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.execOnce(ctx, query, args)
	}
	// The driver resets the statement after every execution, failed or
	// not, so it is ready for the next one.
	return cs.stmt.ExecContext(ctx, args)
}

// execOnce runs query with a statement of its own, finalized afterwards.
func (c *stmtCacheConn) execOnce(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.prepare(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := s.ExecContext(ctx, args)
	if cerr := s.Close(); err == nil && cerr != nil {
		return nil, cerr
	}
	return res, err
}

// QueryContext implements driver.QueryerContext with a cached statement;
// while the rows are open the statement is busy, and the same query text
// gets a statement of its own.
func (c *stmtCacheConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	ctx, err := c.detach(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := c.acquire(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		s, err := c.prepare(ctx, query)
		if err != nil {
			return nil, err
		}
		rows, err := s.QueryContext(ctx, args)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		return c.wrapRows(rows, &cachedStmt{query: query, stmt: s, busy: true, evicted: true})
	}
	rows, err := cs.stmt.QueryContext(ctx, args)
	if err != nil {
		// The driver reset the statement (or closed the rows it made).
		return nil, err
	}
	cs.busy = true
	return c.wrapRows(rows, cs)
}

// wrapRows returns rows that release cs when closed.
func (c *stmtCacheConn) wrapRows(rows driver.Rows, cs *cachedStmt) (driver.Rows, error) {
	r, ok := rows.(sqliteRows)
	if !ok {
		_ = rows.Close()
		if cs.evicted {
			_ = cs.stmt.Close()
		}
		return nil, errors.New("sqldb: sqlite rows lack the expected driver interfaces")
	}
	return &stmtCacheRows{sqliteRows: r, cs: cs}, nil
}

// acquire returns the cached statement for query, preparing and caching it
// on a miss, or nil when it is busy and the caller must prepare one of its
// own.
func (c *stmtCacheConn) acquire(ctx context.Context, query string) (*cachedStmt, error) {
	if e, ok := c.byQuery[query]; ok {
		cs := e.Value.(*cachedStmt)
		if cs.busy {
			return nil, nil
		}
		c.lru.MoveToFront(e)
		return cs, nil
	}
	s, err := c.prepare(ctx, query)
	if err != nil {
		return nil, err
	}
	cs := &cachedStmt{query: query, stmt: s}
	c.byQuery[query] = c.lru.PushFront(cs)
	for c.lru.Len() > c.size {
		old := c.lru.Back()
		c.lru.Remove(old)
		ocs := old.Value.(*cachedStmt)
		delete(c.byQuery, ocs.query)
		ocs.evicted = true
		if !ocs.busy {
			_ = ocs.stmt.Close()
		}
	}
	return cs, nil
}

// PrepareContext implements driver.ConnPrepareContext for the statements a
// caller prepares itself (tx.PrepareContext, tx.StmtContext, db.Prepare):
// inside a shared transaction they run detached too, like ExecContext's
// and QueryContext's (see detach).
func (c *stmtCacheConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	s, err := c.prepare(ctx, query)
	if err != nil {
		return nil, err
	}
	return callerStmt{sqliteStmt: s, c: c}, nil
}

// callerStmt is a statement prepared by a caller rather than cached: it is
// the caller's to close.
type callerStmt struct {
	sqliteStmt
	c *stmtCacheConn
}

// ExecContext implements driver.StmtExecContext.
func (s callerStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	ctx, err := s.c.detach(ctx)
	if err != nil {
		return nil, err
	}
	return s.sqliteStmt.ExecContext(ctx, args)
}

// QueryContext implements driver.StmtQueryContext.
func (s callerStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	ctx, err := s.c.detach(ctx)
	if err != nil {
		return nil, err
	}
	return s.sqliteStmt.QueryContext(ctx, args)
}

// prepare compiles query with the driver.
func (c *stmtCacheConn) prepare(ctx context.Context, query string) (sqliteStmt, error) {
	ds, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s, ok := ds.(sqliteStmt)
	if !ok {
		_ = ds.Close()
		return nil, errors.New("sqldb: sqlite statement lacks the expected driver interfaces")
	}
	return s, nil
}

// Close finalizes the cached statements, then closes the connection:
// sqlite3_close_v2 would otherwise keep the database open as a zombie until
// they were finalized, which nothing would then do. A statement whose rows
// are still open (database/sql closes rows before their connection, so only
// in theory) is finalized by its rows' Close, which lets the zombie go.
func (c *stmtCacheConn) Close() error {
	var errs []error
	for e := c.lru.Front(); e != nil; e = e.Next() {
		cs := e.Value.(*cachedStmt)
		cs.evicted = true
		if !cs.busy {
			errs = append(errs, cs.stmt.Close())
		}
	}
	c.lru.Init()
	clear(c.byQuery)
	errs = append(errs, c.sqliteConn.Close())
	return errors.Join(errs...)
}

// stmtCacheRows are rows read from a cached (or one-off) statement, which
// they release when closed.
type stmtCacheRows struct {
	sqliteRows
	cs     *cachedStmt
	closed bool
}

// Close implements driver.Rows: the driver resets a cached statement when
// its rows close (it finalizes only statements it prepared for one query),
// after which the statement may run again.
func (r *stmtCacheRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.sqliteRows.Close()
	cs := r.cs
	cs.busy = false
	if cs.evicted {
		if cerr := cs.stmt.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
