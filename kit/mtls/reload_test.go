package mtls_test

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
)

// TestReloadSaysEachSetOnce: reading the same refused files again, or the
// same missing file, or the expired certificate in use, logs nothing
// more; a new set is said again.
func TestReloadSaysEachSetOnce(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	dir := t.TempDir()
	cfg := ca.Write(t, dir, time.Hour, []string{"127.0.0.1"})
	var logs bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c, err := mtls.Load(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	count := func(text string) int { return strings.Count(logs.String(), text) }
	now := time.Now()
	tests := []struct {
		name   string
		change func()
		at     time.Time
		text   string
		want   int
	}{
		{"a key of another certificate", func() {
			_, key := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}})
			mtlstest.WriteFile(t, cfg.KeyFile, key)
		}, now, "private key does not match", 1},
		{"another such key", func() {
			_, key := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}})
			mtlstest.WriteFile(t, cfg.KeyFile, key)
		}, now, "private key does not match", 2},
		{"a CA file gone", func() {
			if err := os.Rename(cfg.CAFile, cfg.CAFile+".moved"); err != nil {
				t.Fatal(err)
			}
		}, now, "not read", 1},
		{"a good set again", func() { ca.Write(t, dir, time.Hour, []string{"127.0.0.1"}) }, now, "reloaded", 1},
		{"expired in use", func() {}, now.Add(48 * time.Hour), "has expired", 1},
	}
	for _, tt := range tests {
		tt.change()
		for range 3 {
			c.ReloadAt(t.Context(), tt.at)
		}
		if got := count(tt.text); got != tt.want {
			t.Fatalf("%s: %d lines saying %q, want %d:\n%s", tt.name, got, tt.text, tt.want, logs.String())
		}
	}
}
