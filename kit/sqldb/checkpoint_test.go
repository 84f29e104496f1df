package sqldb_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/sqldb"
)

// TestCheckpointInBackground: what is committed reaches the database file
// without another write, well before the writing connection's own
// checkpoint threshold: the background checkpointer copied it.
func TestCheckpointInBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.db")
	db := open(t, "sqlite:"+path)
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE blobs (b BLOB NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	// ~250 pages: under SQLite's default threshold (1,000) and the
	// backstop the writer is given, so only the checkpointer copies them.
	blob := []byte(strings.Repeat("x", 4000))
	if err := db.InTx(t.Context(), func(tx *sql.Tx) error {
		for range 250 {
			if _, err := tx.ExecContext(t.Context(), "INSERT INTO blobs (b) VALUES (?)", blob); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const want = 250 * 4000
	deadline := time.Now().Add(10 * time.Second)
	for size()-before < want {
		if time.Now().After(deadline) {
			t.Fatalf("database file grew by %d bytes in 10s, want %d: no checkpoint", size()-before, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCloseStopsCheckpointer: Close waits for the checkpointer, so the
// file can be opened again at once and a write after reopening is kept.
func TestCloseStopsCheckpointer(t *testing.T) {
	url := "sqlite:" + filepath.Join(t.TempDir(), "reopen.db")
	for i := range 3 {
		db, err := sqldb.Open(t.Context(), url, migrations(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(t.Context(), "CREATE TABLE IF NOT EXISTS n (i INTEGER)"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(t.Context(), "INSERT INTO n (i) VALUES (?)", i); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	db := open(t, url)
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM n").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("%d rows, want 3", n)
	}
}
