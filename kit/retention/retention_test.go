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

	"github.com/duetkit/duet/internal/await"
	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/retention"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// table is rows with their times, purged as a store's Purge would: the
// oldest first, at most the limit a call, or at most max when it is set
// (a Purge that deletes fewer than it is allowed).
type table struct {
	mu    sync.Mutex
	rows  []time.Time // oldest first
	max   int
	calls []time.Time // each call's before
	fail  error       // returned by every call while set
}

func (tb *table) purge(_ context.Context, before time.Time, limit int) (int64, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.calls = append(tb.calls, before)
	if tb.fail != nil {
		return 0, tb.fail
	}
	if tb.max > 0 {
		limit = min(limit, tb.max)
	}
	n := 0
	for n < len(tb.rows) && n < limit && tb.rows[n].Before(before) {
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

// waitFor is await.Until with this package's deadline, 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.Until(t, what, 10*time.Second, cond)
}

// TestStart: the purge runs at once with the cutoff a retention ago, goes
// on (after a pause: TestBacklogPauses) while it deletes full chunks,
// then waits an interval (an hour here, so the calls counted are all it
// makes).
func TestStart(t *testing.T) {
	tests := []struct {
		name        string
		old, max    int
		chunk       int
		rows, calls int
	}{
		{"a backlog goes a chunk at a time", 25, 0, 10, 3, 3},
		{"a last chunk that is full takes one more call", 20, 0, 10, 3, 3},
		{"nothing old: one call, then an interval", 0, 0, 10, 3, 1},
		{"a purge deleting less than its limit waits", 25, 5, 10, 23, 1},
		{"the default chunk", 1500, 0, 0, 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			tb := &table{rows: aged(now, tt.old, 3), max: tt.max}
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

// TestBacklogPauses: while it finds full chunks, the purge pauses between
// calls for as long as the last call took, so that a backlog leaves the
// database (SQLite's one writer) to the service about half the time.
func TestBacklogPauses(t *testing.T) {
	const work = 20 * time.Millisecond
	tb := &table{rows: aged(time.Now(), 40, 0)}
	var (
		mu    sync.Mutex
		spans [][2]time.Time // each call's start and end
	)
	stop := retention.Start(t.Context(), retention.Config{Retention: time.Hour, Interval: time.Hour, Chunk: 10},
		func(ctx context.Context, before time.Time, limit int) (int64, error) {
			began := time.Now()
			time.Sleep(work) // the chunk's statement, as slow as a big DELETE
			n, err := tb.purge(ctx, before, limit)
			mu.Lock()
			spans = append(spans, [2]time.Time{began, time.Now()})
			mu.Unlock()
			return n, err
		})
	waitFor(t, "the backlog purged", func() bool { _, calls := tb.state(); return calls >= 5 })
	stop()
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(spans); i++ {
		took, pause := spans[i-1][1].Sub(spans[i-1][0]), spans[i][0].Sub(spans[i-1][1])
		if pause < took {
			t.Errorf("call %d came %v after call %d, which took %v: want a pause at least as long", i+1, pause, i, took)
		}
	}
}

// TestNegativeRetentionKeepsEverything: a negative retention never
// purges, while a purge started beside it runs many times; a zero one is
// refused.
func TestNegativeRetentionKeepsEverything(t *testing.T) {
	now := time.Now()
	kept := &table{rows: aged(now, 5, 0)}
	witness := &table{}
	stopKept := retention.Start(t.Context(), retention.Config{Retention: -time.Hour, Interval: time.Millisecond}, kept.purge)
	stopWitness := retention.Start(t.Context(), retention.Config{Retention: time.Hour, Interval: time.Millisecond}, witness.purge)
	waitFor(t, "the witness's purges", func() bool { _, calls := witness.state(); return calls >= 5 })
	stopKept()
	stopWitness()
	if rows, calls := kept.state(); rows != 5 || calls != 0 {
		t.Errorf("%d calls, %d rows left; want none, all 5", calls, rows)
	}

	defer func() {
		if recover() == nil {
			t.Error("a zero retention was taken")
		}
	}()
	stop := retention.Start(t.Context(), retention.Config{}, kept.purge)
	stop()
}

// TestFailuresAreLoggedAndRetried: a failing purge is logged, naming the
// rows, and tried again an interval later, until it succeeds.
func TestFailuresAreLoggedAndRetried(t *testing.T) {
	var logs logbuffer.Buffer
	tb := &table{rows: aged(time.Now(), 4, 1), fail: errors.New("database is locked")}
	stop := retention.Start(t.Context(), retention.Config{Retention: time.Hour, Interval: time.Millisecond, Name: "stock imports",
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, tb.purge)
	defer stop()
	waitFor(t, "a second try", func() bool { _, calls := tb.state(); return calls >= 2 })
	tb.setFail(nil)
	waitFor(t, "the old rows purged", func() bool { rows, _ := tb.state(); return rows == 1 })
	stop()
	out := logs.String()
	for _, want := range []string{"level=WARN", `purge="stock imports"`, `err="database is locked"`, "level=DEBUG msg=\"retention: purged\" purge=\"stock imports\" deleted=4"} {
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
	type seen struct {
		value any
		err   error // the call's context's, once Start's has ended
	}
	var (
		entered   = make(chan seen, 1)
		goOn      = make(chan struct{})
		cancelled = make(chan struct{})
		release   = make(chan struct{})
	)
	stop := retention.Start(ctx, retention.Config{Retention: time.Hour}, func(ctx context.Context, _ time.Time, _ int) (int64, error) {
		<-goOn // Start's context has ended by now
		entered <- seen{ctx.Value(key{}), ctx.Err()}
		<-ctx.Done()
		close(cancelled)
		<-release
		return 0, ctx.Err()
	})
	defer stop()
	cancel()
	close(goOn)
	var s seen
	select {
	case s = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the purge never ran")
	}
	if s.err != nil || s.value != "request-scoped value" {
		t.Errorf("the call's context: value %v, err %v; want Start's value, not its end", s.value, s.err)
	}
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	<-cancelled
	// A stop that did not wait would have returned by now, or soon.
	select {
	case <-stopped:
		t.Error("stop returned while the call was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return once the call had")
	}
	stop()
}
