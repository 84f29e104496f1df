package sqldbtest_test

import (
	"database/sql"
	"os"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

func TestURLs(t *testing.T) {
	var schema string
	t.Run("inner", func(t *testing.T) {
		urls := sqldbtest.URLs(t)
		if !strings.HasPrefix(urls["sqlite"], "sqlite:") {
			t.Errorf("sqlite URL = %q", urls["sqlite"])
		}
		pg, ok := urls["postgres"]
		if ok != (os.Getenv(sqldbtest.PostgresEnv) != "") {
			t.Fatalf("postgres URL present = %v, want it exactly when %s is set", ok, sqldbtest.PostgresEnv)
		}
		if !ok {
			return
		}
		db, err := sql.Open("pgx", pg)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRowContext(t.Context(), "SELECT current_schema()").Scan(&schema); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(schema, "test_") {
			t.Errorf("current_schema() = %q, want a fresh test_ schema", schema)
		}
	})
	if schema == "" {
		return
	}
	db, err := sql.Open("pgx", os.Getenv(sqldbtest.PostgresEnv))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(t.Context(),
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("schema %s still exists after the test ended", schema)
	}
}

func TestRun(t *testing.T) {
	seen := map[string]bool{}
	sqldbtest.Run(t, func(t *testing.T, url string) { seen[t.Name()] = true })
	if !seen["TestRun/sqlite"] {
		t.Errorf("subtests run = %v, want TestRun/sqlite among them", seen)
	}
}
