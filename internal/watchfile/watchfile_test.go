package watchfile_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/internal/watchfile"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func write(t *testing.T, file, contents string) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// TestWatch checks that the ticker reads the file again and hands on
// what changed.
func TestWatch(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	write(t, file, "one")
	var taken atomic.Value
	taken.Store("one")
	w := watchfile.Start(t.Context(), watchfile.Config{File: file, Every: 10 * time.Millisecond, Package: "test", Noun: "thing",
		Logger: slog.New(slog.DiscardHandler), Take: func(b []byte) error { taken.Store(string(b)); return nil }}, []byte("one"))
	defer w.Close()
	write(t, file, "two")
	for deadline := time.Now().Add(10 * time.Second); taken.Load() != "two"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the file's new contents were not taken in 10 s: %q", taken.Load())
		}
	}
}

// TestCheckSaysEachOnce: contents refused, or a file that cannot be
// read, are logged once however often the file is read again; new
// contents are logged again.
func TestCheckSaysEachOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	write(t, file, "good")
	var logs logbuffer.Buffer
	var takes int
	w := watchfile.Start(t.Context(), watchfile.Config{File: file, Every: time.Hour, Package: "test", Noun: "thing",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Take: func(b []byte) error {
			takes++
			if strings.HasPrefix(string(b), "bad") {
				return errors.New("refused")
			}
			return nil
		}}, []byte("good"))
	defer w.Close()
	steps := []struct {
		name   string
		change func()
		counts map[string]int
		takes  int
	}{
		{"unchanged", func() {}, map[string]int{"reloaded": 0}, 0},
		{"bad", func() { write(t, file, "bad 1") }, map[string]int{"test: new thing not used": 1}, 1},
		{"bad otherwise", func() { write(t, file, "bad 2") }, map[string]int{"new thing not used": 2}, 2},
		{"gone", func() {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		}, map[string]int{"test: thing file not read": 1, "new thing not used": 2}, 2},
		{"the first again", func() { write(t, file, "good") }, map[string]int{"not read": 1, "reloaded": 0}, 2},
		{"bad as before", func() { write(t, file, "bad 2") }, map[string]int{"new thing not used": 3}, 3},
		{"a new one", func() { write(t, file, "better") }, map[string]int{"test: thing reloaded": 1}, 4},
	}
	for _, step := range steps {
		step.change()
		for range 3 {
			w.Check(t.Context())
		}
		for text, want := range step.counts {
			if got := strings.Count(logs.String(), text); got != want {
				t.Fatalf("after %s: %d lines saying %q, want %d:\n%s", step.name, got, text, want, logs.String())
			}
		}
		if takes != step.takes {
			t.Fatalf("after %s: Take called %d times, want %d", step.name, takes, step.takes)
		}
	}
}
