package events_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// TestInboxPurge: the purge forgets event ids processed longer ago than
// the retention, a chunk at a time until none is left, and keeps the
// recent ones, of every consumer: a recent event delivered again is still
// skipped, while an old one would be taken for new.
func TestInboxPurge(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := openDB(t, url)
		ctx := t.Context()
		once := func(consumer, id string) bool { return onceInTx(t, ctx, db, consumer, id) }
		old := events.PurgeChunk + 5
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			for i := range old {
				if _, err := events.Once(ctx, tx, db.Dialect, fmt.Sprint("consumer-", i%2), fmt.Sprint("old-", i)); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, db.Rebind("UPDATE events_inbox SET processed_time = ?"), time.Now().Add(-2*time.Hour).UnixMicro())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		once("consumer-0", "recent-0")
		once("consumer-1", "recent-1")

		stop := events.StartInboxPurge(ctx, db, events.InboxConfig{Retention: time.Hour, PurgeInterval: time.Hour, Logger: quiet})
		defer stop()
		rows := func() int {
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM events_inbox").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		// One interval of an hour: the chunks after the first follow
		// after a short pause, not an hour later.
		waitFor(t, "old inbox rows purged", 20*time.Second, func() bool { return rows() == 2 })
		stop()
		if once("consumer-0", "recent-0") || once("consumer-1", "recent-1") {
			t.Error("a recently processed event was forgotten")
		}
		if !once("consumer-1", "old-1") {
			t.Error("an event processed two hours ago is still remembered")
		}
	})
}

// TestPurgeInboxChunk: one PurgeInbox statement deletes at most PurgeChunk
// rows, the oldest.
func TestPurgeInboxChunk(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		db := openDB(t, url)
		ctx := context.Background()
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			for i := range events.PurgeChunk + 3 {
				if _, err := tx.ExecContext(ctx, db.Rebind("INSERT INTO events_inbox (consumer, event_id, processed_time) VALUES (?, ?, ?)"),
					"c", fmt.Sprint("e-", i), int64(i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cutoff := time.UnixMicro(int64(events.PurgeChunk + 2)) // all but the newest are older
		for _, want := range []int64{events.PurgeChunk, 2, 0} {
			n, err := events.PurgeInbox(ctx, db, cutoff)
			if err != nil || n != want {
				t.Fatalf("PurgeInbox = %d, %v; want %d", n, err, want)
			}
		}
		var left string
		if err := db.QueryRowContext(ctx, "SELECT event_id FROM events_inbox").Scan(&left); err != nil || left != fmt.Sprint("e-", events.PurgeChunk+2) {
			t.Errorf("left %q, %v; want the newest row", left, err)
		}
	})
}

// TestInvalidInboxIndexRebuilt: on PostgreSQL, an index build that was
// interrupted leaves an INVALID index behind; the migration that builds it,
// run again, replaces it with a valid one instead of taking it for built.
func TestInvalidInboxIndexRebuilt(t *testing.T) {
	url, ok := sqldbtest.URLs(t)["postgres"]
	if !ok {
		t.Skip("needs " + sqldbtest.PostgresEnv)
	}
	db := openDB(t, url)
	ctx := t.Context()
	exec := func(query string, args ...any) error {
		_, err := db.ExecContext(ctx, query, args...)
		return err
	}
	valid := func() (bool, error) {
		var v bool
		err := db.QueryRowContext(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('events_inbox_processed')").Scan(&v)
		return v, err
	}
	// Back to before the migration, with two rows a unique build fails on:
	// a failed CREATE INDEX CONCURRENTLY leaves its index INVALID, as an
	// interrupted one does.
	if err := exec("DROP INDEX events_inbox_processed"); err != nil {
		t.Fatal(err)
	}
	if err := exec("DELETE FROM " + events.MigrationTable + " WHERE version_id = 2"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		onceInTx(t, ctx, db, "c", id)
	}
	if err := exec("UPDATE events_inbox SET processed_time = 1"); err != nil {
		t.Fatal(err)
	}
	if err := exec("CREATE UNIQUE INDEX CONCURRENTLY events_inbox_processed ON events_inbox (processed_time)"); err == nil {
		t.Fatal("the unique build succeeded over duplicates")
	}
	if v, err := valid(); err != nil || v {
		t.Fatalf("before the migration: valid %v, %v; want an invalid index", v, err)
	}
	if err := events.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if v, err := valid(); err != nil || !v {
		t.Fatalf("after the migration: valid %v, %v; want a valid index", v, err)
	}
}
