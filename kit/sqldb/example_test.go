package sqldb_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"testing/fstest"

	"github.com/duetkit/duet/kit/sqldb"
)

// fstestFS builds an in-memory migrations directory from file contents.
type fstestFS map[string]string

// FS returns the files as an fs.FS.
func (m fstestFS) FS() fstest.MapFS {
	out := fstest.MapFS{}
	for name, data := range m {
		out[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return out
}

func Example() {
	ctx := context.Background()
	// A service embeds its migrations with //go:embed migrations/*.sql.
	migrations := fstestFS{
		"00001_notes.sql": `-- +goose Up
CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL);
-- +goose Down
DROP TABLE notes;
`,
	}.FS()

	// "postgres://..." works the same way.
	db, err := sqldb.Open(ctx, "sqlite::memory:", migrations, sqldb.WithMigrationTable("notes_goose_db_version"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	insert := db.Rebind("INSERT INTO notes (id, body) VALUES (?, ?)")
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, insert, "n1", "hello"); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, insert, "n1", "again")
		return err
	})
	fmt.Println("duplicate:", sqldb.IsUniqueViolation(err))

	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("notes after rollback:", n)
	// Output:
	// duplicate: true
	// notes after rollback: 0
}

// A database that cannot be reached is an outage to retry, not a bug:
// IsUnavailable says so, and a handler answers apierr.StoreUnavailable.
func ExampleIsUnavailable() {
	// Nothing listens on the loopback's port 1.
	_, err := sqldb.Open(context.Background(), "postgres://app@127.0.0.1:1/app?sslmode=disable", nil)
	fmt.Println(sqldb.IsUnavailable(err), sqldb.IsConflict(err))
	// Output: true false
}
