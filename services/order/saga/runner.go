// Package saga runs the order service's sagas in the background and tells
// watchers about every change: Runner executes domain.Service.Step for
// every unfinished order with bounded concurrency, resuming the ones a
// previous process left behind; Feed passes each stored change on to the
// WatchOrder streams and waiting CreateOrder calls in this process.
package saga

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/duetkit/duet/services/order/domain"
)

// Defaults of Config.
const (
	// DefaultWorkers is how many sagas run steps at the same time.
	DefaultWorkers = 8
	// DefaultSweepInterval is how often the runner looks for unfinished
	// orders that nobody is running.
	DefaultSweepInterval = 30 * time.Second
	// DefaultRetryDelay is how long a saga waits after its store failed.
	DefaultRetryDelay = time.Second
	// DefaultSweepBatch is the default of Config.SweepBatch.
	DefaultSweepBatch = 5000
	// DefaultMaxBacklog is the default of Config.MaxBacklog.
	DefaultMaxBacklog = 10000
)

// Stepper is what the runner drives; *domain.Service implements it.
type Stepper interface {
	// Step runs the current step of the order with the given id once; see
	// domain.Service.Step.
	Step(ctx context.Context, id string) (o *domain.Order, moved bool, err error)
	// StepFrom is Step for an order held as it was stored; see
	// domain.Service.StepFrom.
	StepFrom(ctx context.Context, o *domain.Order) (next *domain.Order, moved bool, err error)
	// Pending returns the ids of up to limit unfinished orders due at or
	// before due, the longest due first.
	Pending(ctx context.Context, due time.Time, limit int) ([]string, error)
}

// Config tunes a Runner; zero values take the defaults.
type Config struct {
	// Workers bounds how many sagas run a step at the same time.
	Workers int
	// SweepInterval is how often the runner looks for unfinished orders
	// overdue by more than the interval that it is not running itself:
	// orders of another replica that died, or of a step whose outcome
	// could not be stored.
	SweepInterval time.Duration
	// RetryDelay is how long a saga waits after the store failed.
	RetryDelay time.Duration
	// SweepBatch bounds the orders one sweep reads and queues; default
	// DefaultSweepBatch. A sweep that finds a full batch looks again after
	// RetryDelay rather than SweepInterval, so a backlog of any size is
	// resumed a batch at a time instead of read into memory whole.
	SweepBatch int
	// MaxBacklog is the number of orders this runner holds (queued,
	// running, or waiting to retry) from which Full reports true, so that
	// new orders are refused rather than queued in memory without end
	// while clients send faster than sagas finish (or a peer is down).
	// Sweeps do not look at it. Default DefaultMaxBacklog; negative means
	// no bound.
	MaxBacklog int
	// AfterStep, when set, is called after a step moved an order to
	// another step (step, possibly DONE) and the change was stored. An
	// error stops running that saga in this runner, as if the process had
	// died there; a later Start (or a sweep) resumes it. Tests use it to
	// stop the service between steps.
	AfterStep func(ctx context.Context, orderID string, step domain.Step) error
	// Logger receives store failures; nil means slog.Default().
	Logger *slog.Logger
}

// Runner runs sagas: Submit hands it an order, a worker runs the order's
// steps until it is terminal or must wait for a retry, and a timer hands
// it back when the wait is over. Waiting orders hold no worker.
type Runner struct {
	steps Stepper
	cfg   Config
	log   *slog.Logger

	// wake has room for one signal: a worker that takes an order while
	// more wait passes the signal on, so no queued order is left behind.
	wake chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	cancel  context.CancelFunc
	stopped bool
	queue   []queued
	// known holds every order queued, running or waiting in this runner;
	// the timer of a waiting one, nil otherwise.
	known map[string]*time.Timer
}

// New returns a Runner of steps' sagas; Start starts it.
func New(steps Stepper, cfg Config) *Runner {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = DefaultRetryDelay
	}
	if cfg.MaxBacklog == 0 {
		cfg.MaxBacklog = DefaultMaxBacklog
	}
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = DefaultSweepBatch
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runner{steps: steps, cfg: cfg, log: log, wake: make(chan struct{}, 1), known: map[string]*time.Timer{}}
}

// Start starts the workers and the sweeper, whose first sweep resumes
// every unfinished order in the store. Sagas run with ctx's values until
// Stop (or ctx's end).
func (r *Runner) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	for range r.cfg.Workers {
		r.wg.Go(func() { r.work(ctx) })
	}
	r.wg.Go(func() { r.sweep(ctx) })
}

// Stop stops the runner and waits for its goroutines. Steps in flight are
// abandoned without storing their outcome; they run again, idempotently,
// when the orders are resumed. Stop must not be called from AfterStep.
func (r *Runner) Stop() {
	r.mu.Lock()
	r.stopped = true
	for _, t := range r.known {
		if t != nil {
			t.Stop()
		}
	}
	r.known, r.queue = map[string]*time.Timer{}, nil
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
}

// queued is an order waiting for a worker: its id, and the order as stored
// when the submitter had it (nil when the worker must read it).
type queued struct {
	id string
	o  *domain.Order
}

// Submit asks for the saga of the order with the given id to run as soon as
// a worker is free, unless this runner already has it. The worker reads
// the order first.
func (r *Runner) Submit(id string) { r.submit(queued{id: id}) }

// Schedule implements domain.Scheduler: Submit for an order just stored,
// whose first step starts from o instead of reading it again.
func (r *Runner) Schedule(o *domain.Order) { r.submit(queued{id: o.ID, o: o}) }

// Full reports whether the runner holds Config.MaxBacklog orders or more;
// it implements domain.Scheduler.
func (r *Runner) Full() bool {
	if r.cfg.MaxBacklog < 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.known) >= r.cfg.MaxBacklog
}

func (r *Runner) submit(q queued) {
	r.mu.Lock()
	_, known := r.known[q.id]
	if r.stopped || known {
		r.mu.Unlock()
		return
	}
	r.known[q.id] = nil
	r.queue = append(r.queue, q)
	r.mu.Unlock()
	r.signal()
}

func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// work runs queued sagas until ctx ends.
func (r *Runner) work(ctx context.Context) {
	for {
		q, ok := r.take(ctx)
		if !ok {
			return
		}
		r.drive(ctx, q.id, q.o)
	}
}

// take returns the next queued order, waiting for one; false when ctx ends.
func (r *Runner) take(ctx context.Context) (queued, bool) {
	for {
		r.mu.Lock()
		if len(r.queue) > 0 {
			q := r.queue[0]
			r.queue[0] = queued{}
			r.queue = r.queue[1:]
			more := len(r.queue) > 0
			r.mu.Unlock()
			if more {
				r.signal()
			}
			return q, true
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return queued{}, false
		case <-r.wake:
		}
	}
}

// drive runs the order's steps until it is terminal, must wait, or the
// runner stops. Each step starts from the order the previous one stored
// (from last, the order as submitted, for the first step when it is set):
// reading back what this worker has just written would only cost a query.
// After a wait the order is read again.
func (r *Runner) drive(ctx context.Context, id string, last *domain.Order) {
	for {
		var (
			o     *domain.Order
			moved bool
			err   error
		)
		if last != nil {
			o, moved, err = r.steps.StepFrom(ctx, last)
		} else {
			o, moved, err = r.steps.Step(ctx, id)
		}
		switch {
		case ctx.Err() != nil:
			r.forget(id)
			return
		case errors.Is(err, domain.ErrNotFound):
			r.forget(id)
			return
		case err != nil:
			r.log.WarnContext(ctx, "order saga: step not stored; retrying", "order_id", id, "error", err)
			r.later(id, r.cfg.RetryDelay)
			return
		}
		if moved && r.cfg.AfterStep != nil {
			if err := r.cfg.AfterStep(ctx, id, o.Step); err != nil {
				r.log.InfoContext(ctx, "order saga: stopped after a step", "order_id", id, "step", o.Step, "error", err)
				r.forget(id)
				return
			}
		}
		if o.Status.Terminal() {
			r.forget(id)
			return
		}
		if wait := time.Until(o.NextAttempt); wait > 0 {
			r.later(id, wait)
			return
		}
		last = o
	}
}

// later queues the order again after d.
func (r *Runner) later(id string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.known[id] = time.AfterFunc(d, func() { r.ready(id) })
}

// ready queues an order whose wait is over.
func (r *Runner) ready(id string) {
	r.mu.Lock()
	t, ok := r.known[id]
	if r.stopped || !ok || t == nil {
		r.mu.Unlock()
		return
	}
	r.known[id] = nil
	r.queue = append(r.queue, queued{id: id})
	r.mu.Unlock()
	r.signal()
}

func (r *Runner) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.known, id)
}

// resumeAll is a due time that every stored order is due by.
var resumeAll = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// sweep submits unfinished orders: all of them first (resuming what an
// earlier process left), then every SweepInterval the ones overdue by more
// than the interval, which nobody can be running. Each look reads at most
// a batch, the longest due first. After a full one the next look comes
// after RetryDelay, and, like every look after the first, asks only for
// overdue orders: orders this runner is waiting on, or another replica is
// running, are never overdue, so they do not fill the batches, and the
// rest of a large backlog left behind is resumed as it becomes overdue.
// Orders already queued are not queued twice.
func (r *Runner) sweep(ctx context.Context) {
	due := resumeAll
	for {
		ids, err := r.steps.Pending(ctx, due, r.cfg.SweepBatch)
		wait := r.cfg.SweepInterval
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.log.WarnContext(ctx, "order saga: cannot list unfinished orders", "error", err)
			wait = r.cfg.RetryDelay
		default:
			for _, id := range ids {
				r.Submit(id)
			}
			if len(ids) >= r.cfg.SweepBatch {
				wait = r.cfg.RetryDelay
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err == nil {
			due = time.Now().Add(-r.cfg.SweepInterval)
		}
	}
}
