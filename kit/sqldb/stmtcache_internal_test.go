package sqldb

import (
	"database/sql"
	"database/sql/driver"
	"fmt"
	"path/filepath"
	"testing"
)

// TestStmtCacheEvicts fills a two-entry cache past its size, with rows of an
// evicted statement still open, and checks what the cache holds.
func TestStmtCacheEvicts(t *testing.T) {
	ctx := t.Context()
	_, _, dsn, err := parseURL("sqlite:" + filepath.Join(t.TempDir(), "e.db"))
	if err != nil {
		t.Fatal(err)
	}
	connector, err := newStmtCacheConnector(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cached := func() (n int) {
		_ = conn.Raw(func(dc any) error {
			c := dc.(*stmtCacheConn)
			if c.lru.Len() != len(c.byQuery) {
				t.Errorf("lru holds %d, map %d", c.lru.Len(), len(c.byQuery))
			}
			n = c.lru.Len()
			return nil
		})
		return n
	}
	if _, err := conn.ExecContext(ctx, "CREATE TABLE t (v INTEGER)"); err != nil {
		t.Fatal(err)
	}
	for v := range 5 {
		if _, err := conn.ExecContext(ctx, "INSERT INTO t (v) VALUES (?)", v); err != nil {
			t.Fatal(err)
		}
	}
	// Rows of "open" stay open while three other statements push it out.
	open, err := conn.QueryContext(ctx, "SELECT v FROM t ORDER BY v")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var got int
		q := fmt.Sprintf("SELECT count(*) + %d FROM t", i)
		if err := conn.QueryRowContext(ctx, q).Scan(&got); err != nil || got != 5+i {
			t.Fatalf("%s = %d, %v", q, got, err)
		}
	}
	if n := cached(); n != 2 {
		t.Fatalf("cache holds %d statements, want 2", n)
	}
	var vs []int
	for open.Next() {
		var v int
		if err := open.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := open.Close(); err != nil || len(vs) != 5 {
		t.Fatalf("evicted rows: %v, close err %v", vs, err)
	}
	if err := conn.Raw(func(dc any) error { return dc.(driver.Conn).Close() }); err != nil {
		t.Fatalf("conn close: %v", err)
	}
	if n := cached(); n != 0 {
		t.Fatalf("cache holds %d statements after Close, want 0", n)
	}
}

// TestStmtCacheBeginModes checks that transactions begun with the cached
// statements keep the DSN's _txlock mode: while one connection holds an
// IMMEDIATE transaction, another's IMMEDIATE BEGIN finds the database
// locked, and a DEFERRED or read-only BEGIN does not (it locks nothing yet).
func TestStmtCacheBeginModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	open := func(t *testing.T, txlock string) *sql.DB {
		_, _, dsn, err := parseURL("sqlite:" + path + "?_busy_timeout=0&_txlock=" + txlock)
		if err != nil {
			t.Fatal(err)
		}
		connector, err := newStmtCacheConnector(dsn, stmtCacheSize)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(connector)
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	holder := open(t, "immediate")
	if _, err := holder.ExecContext(t.Context(), "CREATE TABLE IF NOT EXISTS t (v INTEGER)"); err != nil {
		t.Fatal(err)
	}
	held, err := holder.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Rollback() }()
	tests := []struct {
		txlock   string
		readOnly bool
		wantBusy bool
	}{
		{txlock: "immediate", wantBusy: true},
		{txlock: "exclusive", wantBusy: true},
		{txlock: "deferred"},
		{txlock: "immediate", readOnly: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s read-only=%v", tt.txlock, tt.readOnly), func(t *testing.T) {
			db := open(t, tt.txlock)
			tx, err := db.BeginTx(t.Context(), &sql.TxOptions{ReadOnly: tt.readOnly})
			if busy := err != nil && isBusy(err); busy != tt.wantBusy || (err != nil && !busy) {
				t.Fatalf("BEGIN: err = %v, want busy %v", err, tt.wantBusy)
			}
			if err == nil {
				if err := tx.Commit(); err != nil {
					t.Fatalf("COMMIT: %v", err)
				}
			}
		})
	}
}
