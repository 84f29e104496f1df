package retention_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/duetkit/duet/kit/retention"
	"github.com/duetkit/duet/kit/sqldb"
)

// ExampleStart forgets idempotency keys a day after they were used: the
// Purge deletes a chunk of the oldest rows, with an index on the time so
// that it reads only them, and Start calls it again at once while chunks
// come back full.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sqldb.Open(ctx, "sqlite::memory:", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, used_time BIGINT NOT NULL);
		CREATE INDEX idempotency_keys_used_time ON idempotency_keys (used_time)`); err != nil {
		log.Fatal(err)
	}
	for i, age := range []time.Duration{72 * time.Hour, 48 * time.Hour, 36 * time.Hour, time.Hour} {
		if _, err := db.ExecContext(ctx, "INSERT INTO idempotency_keys VALUES (?, ?)", fmt.Sprint("key-", i), time.Now().Add(-age).UnixMicro()); err != nil {
			log.Fatal(err)
		}
	}

	done := make(chan struct{})
	purge := func(ctx context.Context, before time.Time, limit int) (int64, error) {
		res, err := db.ExecContext(ctx, db.Rebind(`DELETE FROM idempotency_keys WHERE key IN (
			SELECT key FROM idempotency_keys WHERE used_time < ? ORDER BY used_time LIMIT ?)`), before.UnixMicro(), limit)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		fmt.Println("purged", n)
		if n < int64(limit) {
			close(done) // for the example's output: the backlog is gone
		}
		return n, err
	}
	stop := retention.Start(ctx, retention.Config{Retention: 24 * time.Hour, Chunk: 2, Name: "idempotency keys"}, purge)
	<-done
	stop()

	var left int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM idempotency_keys").Scan(&left); err != nil {
		log.Fatal(err)
	}
	fmt.Println("left", left)
	// Output:
	// purged 2
	// purged 1
	// left 1
}
