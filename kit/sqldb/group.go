package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// maxGroup bounds how many InTx calls share one SQLite transaction, so a
// steady stream of callers still commits regularly.
const maxGroup = 64

// txGroup is group commit for a SQLite DB: InTx calls that arrive while
// another one holds the database's single connection join its transaction
// instead of queuing for a transaction each, and all of them are committed
// together. Before committing a transaction nobody waits to join, the
// last call yields the processor once (see leave).
//
// Why: on SQLite a commit costs far more than the statements of a typical
// store transaction (WAL frames written for every page touched, file
// locks), and the services' transactions touch the same few pages (the
// newest rows, the ends of indexes). Under load most transactions end up
// sharing a commit; alone, a call runs as a transaction of its own.
//
// Each call runs its fn on its own goroutine in its turn. The call that
// begins the transaction runs as it would alone; each call that joins it
// runs inside a savepoint: an error or panic from fn rolls back to the
// savepoint, undoing fn's work only, and InTx returns as it did alone. A
// call whose fn succeeded returns once the shared transaction is
// committed, with the commit's error if it failed, so nil still means
// stored. Should the transaction itself break (SQLite rolls back the whole
// transaction on some errors, such as a full disk, and the savepoint is
// then gone), every call in it fails. A caller's context that ends is not
// such an error: its statements are not interrupted halfway, the next one
// fails before it runs (stmtCacheConn.detach).
type txGroup struct {
	db *sql.DB

	mu sync.Mutex
	// held is set while some call has the turn: it alone may use or begin
	// the open transaction.
	held bool
	// waiters are the calls waiting for the turn, first first.
	waiters []chan struct{}
	// open is the transaction calls are joining; nil between commits.
	open *txBatch
}

// txBatch is one shared transaction.
type txBatch struct {
	tx *sql.Tx
	// members counts the calls that joined (holder only).
	members int
	// checked is set once the transaction was seen open after its first
	// call, which has no savepoint to show it (holder only; see check).
	checked bool
	// done is closed once the transaction is committed or rolled back,
	// with err its outcome.
	done chan struct{}
	err  error
}

// savepoint is the name of every member's savepoint: members run one after
// the other, each releasing its savepoint before the next begins one, so
// one name serves them all (and one cached statement).
const savepoint = "sqldb_member"

// run is InTx for a SQLite DB.
func (g *txGroup) run(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := g.acquire(ctx); err != nil {
		return fmt.Errorf("sqldb: begin: %w", err)
	}
	if err := ctx.Err(); err != nil {
		g.leave()
		return fmt.Errorf("sqldb: begin: %w", err)
	}
	g.mu.Lock()
	b := g.open
	g.mu.Unlock()
	// The statements that manage the transaction must run whatever becomes
	// of this caller's context: other callers' work depends on them.
	bg := context.WithoutCancel(ctx)
	// joined is set when calls before this one are in the transaction:
	// fn may read their work, which stands or falls with the commit.
	joined := b != nil
	if !joined {
		// Marked shared, so that no caller's statement can be interrupted
		// halfway (stmtCacheConn.detach).
		tx, err := g.db.BeginTx(withSharedTx(bg), nil)
		if err != nil {
			g.pass()
			return fmt.Errorf("sqldb: begin: %w", err)
		}
		b = &txBatch{tx: tx, done: make(chan struct{})}
		g.mu.Lock()
		g.open = b
		g.mu.Unlock()
	} else if _, err := b.tx.ExecContext(bg, "SAVEPOINT "+savepoint); err != nil {
		err = fmt.Errorf("sqldb: savepoint: %w", err)
		g.abort(b, err)
		return err
	}
	b.members++
	panicking := true
	defer func() {
		if panicking {
			// Undo fn's work alone and let the panic go on.
			g.undo(bg, b, joined)
		}
	}()
	ferr := fn(b.tx)
	panicking = false
	if ferr != nil {
		g.undo(bg, b, joined)
		if joined {
			// fn's error may rest on what earlier calls wrote: when that
			// is not committed after all, report the failed commit, which
			// callers retry, rather than an outcome that never was.
			<-b.done
			if b.err != nil {
				return b.err
			}
		}
		return ferr
	}
	if joined {
		if _, err := b.tx.ExecContext(bg, "RELEASE "+savepoint); err != nil {
			err = fmt.Errorf("sqldb: release savepoint: %w", err)
			g.abort(b, err)
			return err
		}
	}
	g.leave()
	<-b.done
	return b.err
}

// undo undoes the caller's work and ends its turn: the first call of b,
// alone in it, rolls b back whole; a call that joined rolls back to its
// savepoint, and aborts b when that fails.
func (g *txGroup) undo(ctx context.Context, b *txBatch, joined bool) {
	if !joined {
		// Nobody waits for b's outcome.
		g.abort(b, nil)
		return
	}
	_, err := b.tx.ExecContext(ctx, "ROLLBACK TO "+savepoint)
	if err == nil {
		_, err = b.tx.ExecContext(ctx, "RELEASE "+savepoint)
	}
	if err != nil {
		g.abort(b, fmt.Errorf("sqldb: roll back to savepoint: %w", err))
		return
	}
	g.leave()
}

// acquire waits for the turn, or for ctx to end.
func (g *txGroup) acquire(ctx context.Context) error {
	g.mu.Lock()
	if !g.held {
		g.held = true
		g.mu.Unlock()
		return nil
	}
	turn := make(chan struct{})
	g.waiters = append(g.waiters, turn)
	g.mu.Unlock()
	select {
	case <-turn:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	if i := slices.Index(g.waiters, turn); i >= 0 {
		g.waiters = slices.Delete(g.waiters, i, i+1)
		g.mu.Unlock()
		return ctx.Err()
	}
	g.mu.Unlock()
	// The turn came as ctx ended: it must still be passed on, and the open
	// transaction committed if nobody else will.
	g.leave()
	return ctx.Err()
}

// leave ends the caller's turn. While others wait and the open transaction
// has room, the first of them gets the turn and joins it; otherwise the
// open transaction, if any, is committed first and the next caller begins
// a new one.
func (g *txGroup) leave() {
	g.mu.Lock()
	b := g.open
	share := b != nil && len(g.waiters) > 0 && b.members < maxGroup
	g.mu.Unlock()
	if b != nil && !share && b.members < maxGroup {
		// Nobody waits, but under load some goroutines that are ready to
		// run are about to call InTx: let them have the processor once,
		// so they join this commit instead of paying for one each. With
		// nothing else ready, Gosched returns at once. In the shop's order
		// path at saturation this took commits from 3 to 10 calls each on
		// average and throughput up 7–40 % (bench/README.md).
		runtime.Gosched()
		g.mu.Lock()
		share = len(g.waiters) > 0
		g.mu.Unlock()
	}
	if share && !b.checked {
		if err := b.check(); err != nil {
			g.abort(b, err)
			return
		}
		b.checked = true
	}
	g.mu.Lock()
	// Waiters may have given up meanwhile.
	if share && len(g.waiters) > 0 {
		g.handOver()
		g.mu.Unlock()
		return
	}
	g.open = nil
	g.mu.Unlock()
	if b != nil {
		err := b.tx.Commit()
		if err != nil {
			err = fmt.Errorf("sqldb: commit: %w", err)
		}
		b.finish(err)
	}
	g.pass()
}

// abort rolls back the open transaction b, which can no longer be trusted,
// fails every call in it with err, and passes the turn on.
func (g *txGroup) abort(b *txBatch, err error) {
	g.mu.Lock()
	g.open = nil
	g.mu.Unlock()
	_ = b.tx.Rollback()
	b.finish(err)
	g.pass()
}

// pass gives the turn to the next waiter, or frees it.
func (g *txGroup) pass() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.waiters) > 0 {
		g.handOver()
		return
	}
	g.held = false
}

// handOver gives the turn to the first waiter; g.mu is held.
func (g *txGroup) handOver() {
	turn := g.waiters[0]
	g.waiters = slices.Delete(g.waiters, 0, 1)
	close(turn)
}

// check makes sure b's transaction is still open before another call
// joins it. Its first call runs without a savepoint (alone, it needs none),
// and SQLite rolls a whole transaction back on some errors (a full disk, an
// I/O error, an interrupted statement): had that call ignored such an
// error, the next call's savepoint would begin a new transaction and the
// commit would report the first call's lost work as stored. BEGIN fails
// inside a transaction and succeeds only outside one, which the rollback
// in abort then ends.
func (b *txBatch) check() error {
	_, err := b.tx.Exec("BEGIN")
	switch {
	case err == nil:
		return errors.New("sqldb: the transaction was rolled back")
	case strings.Contains(err.Error(), "within a transaction"):
		return nil
	default:
		return fmt.Errorf("sqldb: check transaction: %w", err)
	}
}

// finish records the outcome of b and wakes the calls waiting for it.
func (b *txBatch) finish(err error) {
	b.err = err
	close(b.done)
}
