package saga_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/saga"
)

// script is what a fake order does under Step.
type script struct {
	// steps is how many more moves the order makes before it is terminal.
	steps int
	// wait, when set, makes the next Step not move but ask to be tried
	// again that much later (once).
	wait time.Duration
	// storeErr, when set, is returned by the next Step (once).
	storeErr error
	// block makes Step wait until its context ends or release is closed.
	block bool
	// left marks an order an earlier process left behind: Pending lists
	// it, when due by its due time, until it is first stepped.
	left bool
	// due is when a left order is due; zero means long ago.
	due time.Time
}

// stepper is a fake saga.Stepper over scripted orders.
type stepper struct {
	mu       sync.Mutex
	orders   map[string]*script
	calls    map[string]int
	running  int
	maxRun   int
	pendings []time.Time
	maxPage  int // the most ids one Pending returned
	release  chan struct{}
	changed  chan struct{}
}

func newStepper(orders map[string]*script) *stepper {
	return &stepper{orders: orders, calls: map[string]int{}, release: make(chan struct{}), changed: make(chan struct{}, 1)}
}

func (s *stepper) Step(ctx context.Context, id string) (*domain.Order, bool, error) {
	s.mu.Lock()
	sc, ok := s.orders[id]
	s.calls[id]++
	s.running++
	s.maxRun = max(s.maxRun, s.running)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}()
	if !ok {
		return nil, false, domain.ErrNotFound
	}
	s.mu.Lock()
	block := sc.block
	s.mu.Unlock()
	if block {
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-s.release:
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := &domain.Order{ID: id, Status: domain.StatusPending, Step: domain.StepCheckUser}
	switch {
	case sc.storeErr != nil:
		err := sc.storeErr
		sc.storeErr = nil
		return nil, false, err
	case sc.wait > 0:
		o.NextAttempt = time.Now().Add(sc.wait)
		sc.wait = 0
		return o, false, nil
	}
	sc.steps--
	o.Step = domain.Step(fmt.Sprint("step-", sc.steps))
	if sc.steps <= 0 {
		o.Status, o.Step = domain.StatusConfirmed, domain.StepDone
	}
	return o, true, nil
}

func (s *stepper) StepFrom(ctx context.Context, o *domain.Order) (*domain.Order, bool, error) {
	return s.Step(ctx, o.ID)
}

func (s *stepper) Pending(_ context.Context, due time.Time, limit int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendings = append(s.pendings, due)
	var ids []string
	for id, sc := range s.orders {
		if sc.left && sc.steps > 0 && s.calls[id] == 0 && !sc.due.After(due) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = ids[:min(limit, len(ids))]
	s.maxPage = max(s.maxPage, len(ids))
	return ids, nil
}

// until waits for cond, checking after every Step, for at most 10s.
func (s *stepper) until(t *testing.T, what string, cond func(s *stepper) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		ok := cond(s)
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.changed:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func finished(ids ...string) func(s *stepper) bool {
	return func(s *stepper) bool {
		for _, id := range ids {
			if s.orders[id].steps > 0 {
				return false
			}
		}
		return true
	}
}

func start(t *testing.T, s *stepper, cfg saga.Config) *saga.Runner {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	r := saga.New(s, cfg)
	r.Start(t.Context())
	t.Cleanup(r.Stop)
	return r
}

func TestRunnerRunsSagasToTheEnd(t *testing.T) {
	tests := []struct {
		name    string
		orders  map[string]*script
		workers int
		calls   map[string]int
	}{
		{"one", map[string]*script{"a": {steps: 3}}, 1, map[string]int{"a": 3}},
		{"several", map[string]*script{"a": {steps: 2}, "b": {steps: 5}, "c": {steps: 1}}, 2, map[string]int{"a": 2, "b": 5, "c": 1}},
		{"waits for retries", map[string]*script{"a": {steps: 2, wait: 20 * time.Millisecond}}, 1, map[string]int{"a": 3}},
		{"retries store failures", map[string]*script{"a": {steps: 2, storeErr: errors.New("db down")}}, 1, map[string]int{"a": 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStepper(tt.orders)
			r := start(t, s, saga.Config{Workers: tt.workers, RetryDelay: 10 * time.Millisecond})
			for id := range tt.orders {
				r.Submit(id)
			}
			ids := make([]string, 0, len(tt.orders))
			for id := range tt.orders {
				ids = append(ids, id)
			}
			s.until(t, "every saga to end", finished(ids...))
			r.Stop()
			if fmt.Sprint(s.calls) != fmt.Sprint(tt.calls) {
				t.Fatalf("Step calls %v, want %v", s.calls, tt.calls)
			}
		})
	}
}

func TestRunnerBoundsConcurrency(t *testing.T) {
	orders := map[string]*script{}
	for i := range 6 {
		orders[fmt.Sprint("o", i)] = &script{steps: 1, block: true}
	}
	s := newStepper(orders)
	r := start(t, s, saga.Config{Workers: 2})
	for id := range orders {
		r.Submit(id)
	}
	s.until(t, "two steps running", func(s *stepper) bool { return s.running == 2 })
	close(s.release)
	ids := make([]string, 0, len(orders))
	for id := range orders {
		ids = append(ids, id)
	}
	s.until(t, "every saga to end", finished(ids...))
	if s.maxRun != 2 {
		t.Fatalf("%d steps ran at once, want at most 2", s.maxRun)
	}
}

func TestRunnerResumesAndSweeps(t *testing.T) {
	s := newStepper(map[string]*script{"left-behind": {steps: 2, left: true}, "also": {steps: 1, left: true}})
	start(t, s, saga.Config{SweepInterval: 20 * time.Millisecond})
	// Nobody submitted them: the first sweep finds every unfinished order.
	s.until(t, "the unfinished orders to be resumed", finished("left-behind", "also"))
	// Copied under the stepper's lock (until holds it): the sweeper goes
	// on appending.
	var first, later time.Time
	s.until(t, "a later sweep", func(s *stepper) bool {
		if len(s.pendings) < 2 {
			return false
		}
		first, later = s.pendings[0], s.pendings[1]
		return true
	})
	if first.Before(time.Now().Add(time.Hour)) {
		t.Fatalf("first sweep asked for orders due by %v; want every order", first)
	}
	if later.After(time.Now().Add(-20 * time.Millisecond)) {
		t.Fatalf("later sweep asked for orders due by %v; want only those overdue by the interval", later)
	}
}

// TestRunnerResumesInBatches: a backlog of overdue orders larger than a
// sweep's batch is resumed a batch at a time, the next look coming after
// RetryDelay, not after the (here hour-long) SweepInterval; no look reads
// more than a batch. An order that is not overdue (another replica's, due
// a minute ago) is left alone after the first look.
func TestRunnerResumesInBatches(t *testing.T) {
	orders := map[string]*script{}
	var ids []string
	for i := range 7 {
		id := fmt.Sprint("left-", i)
		orders[id], ids = &script{steps: 1, left: true}, append(ids, id)
	}
	// Sorts after the others, so the first look, which takes every
	// order, does not reach it.
	orders["zz-recent"] = &script{steps: 1, left: true, due: time.Now().Add(-time.Minute)}
	s := newStepper(orders)
	start(t, s, saga.Config{SweepBatch: 3, SweepInterval: time.Hour, RetryDelay: 10 * time.Millisecond})
	s.until(t, "every overdue order to be resumed", finished(ids...))
	s.until(t, "a look after the backlog", func(s *stepper) bool { return len(s.pendings) >= 3 })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxPage > 3 {
		t.Errorf("a sweep read %d orders, more than its batch of 3", s.maxPage)
	}
	if s.calls["zz-recent"] != 0 {
		t.Error("a sweep after the first took an order that is not overdue")
	}
}

func TestRunnerSubmitIsIdempotent(t *testing.T) {
	s := newStepper(map[string]*script{"a": {steps: 1, block: true}})
	r := start(t, s, saga.Config{Workers: 4})
	r.Submit("a")
	s.until(t, "the step to run", func(s *stepper) bool { return s.running == 1 })
	for range 5 {
		r.Submit("a") // running: ignored
	}
	close(s.release)
	s.until(t, "the saga to end", finished("a"))
	r.Stop()
	if s.calls["a"] != 1 || s.maxRun != 1 {
		t.Fatalf("%d Step calls, %d at once; want 1, 1", s.calls["a"], s.maxRun)
	}
}

func TestRunnerAfterStep(t *testing.T) {
	s := newStepper(map[string]*script{"a": {steps: 5}, "b": {steps: 3}})
	var (
		mu   sync.Mutex
		seen []string
	)
	stopped := make(chan struct{})
	r := start(t, s, saga.Config{AfterStep: func(_ context.Context, id string, step domain.Step) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, id+" "+string(step))
		if id == "a" && step == "step-3" {
			close(stopped)
			return errors.New("stop here")
		}
		return nil
	}})
	r.Submit("a")
	r.Submit("b")
	s.until(t, "b to end and be seen ending", func(*stepper) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(seen, "b DONE")
	})
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("a never reached step-3")
	}
	r.Stop()
	if s.calls["a"] != 2 || s.orders["a"].steps != 3 {
		t.Fatalf("a ran %d steps after being stopped at step-3", s.calls["a"]-2)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2+3 {
		t.Fatalf("AfterStep saw %v", seen)
	}
}

func TestRunnerStop(t *testing.T) {
	s := newStepper(map[string]*script{"busy": {steps: 1, block: true}, "waiting": {steps: 1, wait: time.Hour}, "missing": nil})
	delete(s.orders, "missing")
	r := saga.New(s, saga.Config{Logger: slog.New(slog.DiscardHandler)})
	r.Start(t.Context())
	r.Submit("busy")
	r.Submit("waiting")
	r.Submit("missing")
	s.until(t, "busy to run and waiting to wait", func(s *stepper) bool {
		return s.running == 1 && s.calls["waiting"] == 1 && s.calls["missing"] == 1
	})
	stopped := make(chan struct{})
	go func() {
		r.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not cancel the step in flight")
	}
	r.Submit("busy") // after Stop: ignored
	if s.calls["busy"] != 1 || s.orders["busy"].steps != 1 {
		t.Fatalf("busy: %d calls, %d steps left", s.calls["busy"], s.orders["busy"].steps)
	}
}
