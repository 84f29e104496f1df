// Package sqldbtest gives store tests a fresh, empty database in every
// dialect available: SQLite always, PostgreSQL when DUET_TEST_POSTGRES_URL is
// set. Each call gets its own SQLite file and its own PostgreSQL schema, so
// tests can run in parallel and never see each other's rows.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver used to create schemas
)

// PostgresEnv is the environment variable holding the URL of a PostgreSQL
// database that tests may create and drop schemas in.
const PostgresEnv = "DUET_TEST_POSTGRES_URL"

// URLs returns one database URL per available dialect, keyed "sqlite" and,
// when PostgresEnv is set, "postgres". The SQLite URL names a file in a
// temporary directory; the PostgreSQL URL points at a new, empty schema
// (through search_path) that is dropped when the test ends. Pass a URL to
// sqldb.Open or to a service's Config.
func URLs(t testing.TB) map[string]string {
	t.Helper()
	urls := map[string]string{
		"sqlite": "sqlite:" + filepath.Join(t.TempDir(), "test.db"),
	}
	if base := os.Getenv(PostgresEnv); base != "" {
		urls["postgres"] = postgresSchema(t, base)
	}
	return urls
}

// Postgres returns the URL of a new, empty PostgreSQL schema, as URLs
// does, parsed for a test that changes it (its host, to go through a
// proxy, or its parameters); it skips t when PostgresEnv is not set.
func Postgres(t testing.TB) *url.URL {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skipf("%s is not set", PostgresEnv)
	}
	u, err := url.Parse(postgresSchema(t, base))
	if err != nil {
		t.Fatalf("sqldbtest: %v", err)
	}
	return u
}

// Run calls fn once per URL from URLs, each in a subtest named for its
// dialect.
func Run(t *testing.T, fn func(t *testing.T, url string)) {
	t.Helper()
	for name, u := range URLs(t) {
		t.Run(name, func(t *testing.T) { fn(t, u) })
	}
}

// postgresSchema creates a uniquely named schema in the database at base and
// returns base with search_path set to it.
func postgresSchema(t testing.TB, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("sqldbtest: parse %s: %v", PostgresEnv, err)
	}
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatalf("sqldbtest: random schema name: %v", err)
	}
	schema := "test_" + hex.EncodeToString(suffix[:])

	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("sqldbtest: open %s: %v", PostgresEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The name is generated above from hex digits only, so it is safe to
	// splice into the statement.
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		_ = admin.Close()
		t.Fatalf("sqldbtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("sqldbtest: drop schema %s: %v", schema, err)
		}
	})

	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
