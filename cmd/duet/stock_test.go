package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/internal/system"
)

// TestStockImportRejectionsFail: `duet stock import` exits non-zero when
// records were rejected, after printing what went in and what did not. It
// exited 0 even when every record was rejected, so a script took a failed
// import for a done one.
func TestStockImportRejectionsFail(t *testing.T) {
	ctx, sys := startLoopbackSystem(t)

	tests := []struct {
		name    string
		csv     string
		wantErr string
		wantOut string
	}{
		{name: "all applied", csv: "sku,name,price,currency,stock\nOK-1,Fine,100,USD,5\n", wantOut: "received 1, applied 1, rejected 0"},
		{name: "one rejected", csv: "sku,name,price,currency,stock\nOK-2,Fine,100,USD,5\nBAD-1,Bad,100,??,5\n",
			wantErr: "1 of 2 records rejected", wantOut: "received 2, applied 1, rejected 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "stock.csv")
			if err := os.WriteFile(file, []byte(tt.csv), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr strings.Builder
			err := run(ctx, []string{"stock", "import", "--inventory-target", sys.InventoryAddr, file}, &stdout, &stderr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("import = %v; stdout:\n%s", err, stdout.String())
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("import = %v, want an error saying %q; stdout:\n%s", err, tt.wantErr, stdout.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout:\n%s\nwant %q", stdout.String(), tt.wantOut)
			}
		})
	}
}

// startLoopbackSystem starts a loopbackSystem, shut down when the test
// ends, and returns it with a context of a minute for the test's calls.
func startLoopbackSystem(t *testing.T) (context.Context, *system.System) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	sys, err := system.Start(ctx, loopbackSystem(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(context.WithoutCancel(ctx)) })
	return ctx, sys
}

// loopbackSystem is a system on a data directory of the test's own, every
// listener on a free loopback port, logging nothing.
func loopbackSystem(t *testing.T) system.Config {
	return system.Config{
		DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		HTTPAddr: "127.0.0.1:0", UserAddr: "127.0.0.1:0", OrderAddr: "127.0.0.1:0", PaymentAddr: "127.0.0.1:0",
		InventoryAddr: "127.0.0.1:0", NotificationAddr: "127.0.0.1:0",
	}
}

// TestStockImportID: `duet stock import --import-id` sends the id, so the
// same file imported again under it applies nothing and says so.
func TestStockImportID(t *testing.T) {
	ctx, sys := startLoopbackSystem(t)
	file := filepath.Join(t.TempDir(), "stock.csv")
	if err := os.WriteFile(file, []byte("sku,name,price,currency,stock\nID-1,Fine,100,USD,5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"received 1, applied 1", `import "restock-7" was applied before; nothing was applied now`} {
		var stdout, stderr strings.Builder
		if err := run(ctx, []string{"stock", "import", "--inventory-target", sys.InventoryAddr, "--import-id", "restock-7", file}, &stdout, &stderr); err != nil {
			t.Fatalf("import %d = %v; stdout:\n%s", i+1, err, stdout.String())
		}
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("import %d printed:\n%s\nwant %q", i+1, stdout.String(), want)
		}
	}
}
