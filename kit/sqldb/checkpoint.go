package sqldb

import (
	"context"
	"database/sql"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// How a file-backed SQLite database is checkpointed: a goroutine with a
// connection of its own copies the write-ahead log into the database file
// shortly after writes (checkpointDelay), and the writing connection's own
// automatic checkpoint (SQLite's wal_autocheckpoint, 1,000 pages by default)
// waits for a longer log (writerCheckpointPages) as a backstop.
//
// Why: SQLite checkpoints in the connection whose COMMIT made the log reach
// the threshold, before that COMMIT returns. With the pool's one connection
// and group commit, every caller waiting for the database waits for that
// checkpoint too: copying up to a thousand pages into the file and an fsync
// of it. Moved aside, the bench's orders ran 4–7 % faster (closed loop, C=1
// and C=64, three runs each way, bench/README.md). SQLite's documentation
// suggests this split: turn the automatic checkpoint off, or up, and
// checkpoint from another thread. Off altogether it is not: a writer that
// never checkpointed had a lower p50 but a p99 of 200–300 ms from the rare
// huge checkpoint, and the log would grow without bound.
//
// A background checkpoint is PASSIVE: it copies what it can without
// blocking the writer, which goes on appending meanwhile. The log restarts
// from its beginning only when a writer finds it wholly copied, which under
// a steady stream of commits a checkpoint running beside them rarely
// leaves; the writer's backstop checkpoint, with all but the last moments
// copied already, is short and lets the log restart, so the log file stays
// under writerCheckpointPages pages (16 MB).
const (
	// checkpointDelay is how long after a write the checkpointer runs:
	// long enough to gather many commits into one checkpoint (each ends
	// with an fsync of the database file), short enough that the log
	// stays small.
	checkpointDelay = 200 * time.Millisecond
	// writerCheckpointPages is the log length, in pages, at which the
	// writing connection checkpoints itself.
	writerCheckpointPages = 4000
)

// checkpointPragma is the _pragma DSN parameter that sets the writing
// connection's automatic checkpoint.
const checkpointPragma = "wal_autocheckpoint"

// withCheckpointer adds the writer's backstop threshold to a SQLite DSN's
// parameters and reports whether a background checkpointer should run: not
// for an in-memory database (no log) and not when the caller set
// wal_autocheckpoint itself, which says the caller runs checkpoints its own
// way (an external tool that takes over checkpointing, say).
func withCheckpointer(path string, params url.Values) bool {
	if path == ":memory:" || strings.HasPrefix(path, "file:") {
		return false
	}
	for _, p := range params["_pragma"] {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(p)), checkpointPragma) {
			return false
		}
	}
	params.Add("_pragma", checkpointPragma+"("+strconv.Itoa(writerCheckpointPages)+")")
	return true
}

// checkpointer copies a SQLite database's write-ahead log into its file in
// the background, checkpointDelay after writes.
type checkpointer struct {
	db *sql.DB // a connection of its own to the same file
	// wrote has room for one signal: some write since the last checkpoint.
	wrote  chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// newCheckpointer opens a connection to the database dsn names and starts
// the goroutine that checkpoints it whenever wrote is signalled.
func newCheckpointer(dsn string, wrote chan struct{}) (*checkpointer, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	// The checkpointer's life is the DB's, not that of any call: Close
	// ends it.
	ctx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{db: db, wrote: wrote, cancel: cancel, done: make(chan struct{})}
	go c.run(ctx)
	return c, nil
}

// run waits for a write, lets checkpointDelay pass, checkpoints, and again.
func (c *checkpointer) run(ctx context.Context) {
	defer close(c.done)
	timer := time.NewTimer(checkpointDelay)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wrote:
		}
		timer.Reset(checkpointDelay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		// A failure (the file's lock held by a checkpoint in another
		// process, a full disk) leaves the log to the writer's backstop
		// and to the next write's checkpoint.
		_, _, _, _ = c.checkpoint(ctx)
	}
}

// checkpoint runs one PASSIVE checkpoint and returns SQLite's answer: busy
// (it could not start), the log's length and how much of it is copied, in
// pages.
func (c *checkpointer) checkpoint(ctx context.Context) (busy bool, logPages, copied int, err error) {
	var b int
	err = c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&b, &logPages, &copied)
	return b != 0, logPages, copied, err
}

// close stops the goroutine and closes its connection.
func (c *checkpointer) close() error {
	c.cancel()
	<-c.done
	return c.db.Close()
}
