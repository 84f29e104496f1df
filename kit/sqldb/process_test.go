package sqldb_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/duetkit/duet/kit/sqldb"
)

// openerEnv makes the test binary, re-run as a child process, open the
// SQLite file it names and exit.
const openerEnv = "SQLDB_TEST_OPEN_URL"

func TestMain(m *testing.M) {
	if url := os.Getenv(openerEnv); url != "" {
		db, err := sqldb.Open(context.Background(), url, migrations(nil))
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(3)
		}
		_ = db.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestOpenFromManyProcesses: processes that open one new SQLite file at the
// same moment all succeed, and the migrations are applied once.
func TestOpenFromManyProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	url := "sqlite:" + filepath.Join(t.TempDir(), "shared.db")
	const n = 4
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), openerEnv+"="+url)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("process %d: %v: %s", i, err, out)
			}
		})
	}
	wg.Wait()
	db := open(t, url)
	var applied int
	if err := db.QueryRowContext(t.Context(),
		"SELECT count(*) FROM "+sqldb.DefaultMigrationTable+" WHERE version_id > 0").Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != 2 {
		t.Errorf("%d migrations recorded, want 2", applied)
	}
}
