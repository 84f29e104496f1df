package retention_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/retention"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// table is rows with their times, purged as a store's Purge would: the
// oldest first, at most limit a call.
type table struct {
	mu    sync.Mutex
	rows  []time.Time // oldest first
	limit int
	calls []time.Time // each call's before
	fail  error       // returned by every call while set
}

func (tb *table) purge(_ context.Context, before time.Time) (int64, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.calls = append(tb.calls, before)
	if tb.fail != nil {
		return 0, tb.fail
	}
	n := 0
	for n < len(tb.rows) && n < tb.limit && tb.rows[n].Before(before) {
		n++
	}
	tb.rows = tb.rows[n:]
	return int64(n), nil
}

func (tb *table) state() (rows, calls int) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return len(tb.rows), len(tb.calls)
}

func (tb *table) setFail(err error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.fail = err
}

// aged returns old rows two hours old and recent ones of now, oldest first.
func aged(now time.Time, old, recent int) []time.Time {
	var rows []time.Time
	for range old {
		rows = append(rows, now.Add(-2*time.Hour))
	}
	for range recent {
		rows = append(rows, now)
	}
	return rows
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStart: the purge runs at once with the cutoff a retention ago, goes
// on without waiting while it finds full chunks, then waits an interval
// (an hour here, so the calls counted are all it makes).
func TestStart(t *testing.T) {
	tests := []struct {
		name        string
		old, limit  int
		chunk       int64
		rows, calls int
	}{
		{"a backlog goes a chunk at a time, at once", 25, 10, 10, 3, 3},
		{"a last chunk that is full takes one more call", 20, 10, 10, 3, 3},
		{"nothing old: one call, then an interval", 0, 10, 10, 3, 1},
		{"no chunk given: one call an interval", 25, 10, 0, 18, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			tb := &table{rows: aged(now, tt.old, 3), limit: tt.limit}
			stop := retention.Start(t.Context(), retention.Config{Retention: time.Hour, Interval: time.Hour, Chunk: tt.chunk}, tb.purge)
			waitFor(t, "the purge's calls", func() bool { _, calls := tb.state(); return calls >= tt.calls })
			stop()
			rows, calls := tb.state()
			if rows != tt.rows || calls != tt.calls {
				t.Errorf("%d rows left after %d calls, want %d after %d", rows, calls, tt.rows, tt.calls)
			}
			for _, before := range tb.calls {
				if age := now.Sub(before); age < time.Hour-time.Second || age > time.Hour+time.Minute {
					t.Errorf("cutoff %v before the start, want about an hour", age)
				}
			}
		})
	}
}

// TestNoRetentionKeepsEverything: a retention of none or less never
// purges, while a purge started beside it with one runs many times.
func TestNoRetentionKeepsEverything(t *testing.T) {
	for _, keep := range []time.Duration{0, -time.Hour} {
		t.Run(keep.String(), func(t *testing.T) {
			now := time.Now()
			kept := &table{rows: aged(now, 5, 0), limit: 10}
			witness := &table{limit: 10}
			stopKept := retention.Start(t.Context(), retention.Config{Retention: keep, Interval: time.Millisecond}, kept.purge)
			stopWitness := retention.Start(t.Context(), retention.Config{Retention: time.Hour, Interval: time.Millisecond}, witness.purge)
			waitFor(t, "the witness's purges", func() bool { _, calls := witness.state(); return calls >= 5 })
			stopKept()
			stopWitness()
			if rows, calls := kept.state(); rows != 5 || calls != 0 {
				t.Errorf("retention %v: %d calls, %d rows left; want none, all 5", keep, calls, rows)
			}
		})
	}
}

// TestFailuresAreLoggedAndRetried: a failing purge is logged, naming the
// rows, and tried again an interval later, until it succeeds.
func TestFailuresAreLoggedAndRetried(t *testing.T) {
	var logs logbuffer.Buffer
	tb := &table{rows: aged(time.Now(), 4, 1), limit: 10, fail: errors.New("database is locked")}
	stop := retention.Start(t.Context(), retention.Config{Retention: time.Hour, Interval: time.Millisecond, What: "stock imports",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, tb.purge)
	defer stop()
	waitFor(t, "a second try", func() bool { _, calls := tb.state(); return calls >= 2 })
	tb.setFail(nil)
	waitFor(t, "the old rows purged", func() bool { rows, _ := tb.state(); return rows == 1 })
	stop()
	out := logs.String()
	for _, want := range []string{"level=WARN", `rows="stock imports"`, `err="database is locked"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

type key struct{}

// TestStopWaitsForTheCallInFlight: the purge outlives the context Start
// was given (a start-up deadline) but keeps its values; stop cancels the
// call in flight and returns only once it has returned, and may be called
// again.
func TestStopWaitsForTheCallInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.WithValue(t.Context(), key{}, "request-scoped value"))
	var (
		mu       sync.Mutex
		value    any
		entered  = make(chan struct{})
		returned bool
	)
	stop := retention.Start(ctx, retention.Config{Retention: time.Hour}, func(ctx context.Context, _ time.Time) (int64, error) {
		mu.Lock()
		value = ctx.Value(key{})
		mu.Unlock()
		close(entered)
		<-ctx.Done()
		mu.Lock()
		returned = true
		mu.Unlock()
		return 0, ctx.Err()
	})
	defer stop()
	cancel()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the purge never ran once Start's context had ended")
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	if !returned {
		t.Error("stop returned before the call in flight did")
	}
	if value != "request-scoped value" {
		t.Errorf("the purge's context has value %v, want Start's", value)
	}
	stop()
}
