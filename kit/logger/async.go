package logger

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Defaults of an Async handler.
const (
	// DefaultQueue is the number of records an Async handler holds before
	// Handle waits for the writer to catch up.
	DefaultQueue = 4096
	// DefaultLinger is how long the writer, once woken, lets records
	// gather before it writes them: one wake-up and one write(2) per batch
	// rather than per line. It is also about how late a line can be.
	//
	// Why 10 ms and not less: a writer that wakes rarely finds its code and
	// data out of the caches, and pays that per batch. At one call at a
	// time (~7,000 calls/s) 1 ms made batches of ~7 lines and cost the
	// server ~13 µs per call; 10 ms, ~7 µs (interleaved bench runs,
	// bench/README.md). A line 10 ms late is still on time for a log.
	DefaultLinger = 10 * time.Millisecond
)

// Async is a slog.Handler that passes records to the next handler on a
// goroutine of its own, in batches, so that formatting and writing a line
// is not on the path of the request that logs it. At one call at a time,
// the kit's access log line cost ~8–11 µs of a small call's ~100 µs
// latency when it was written before the response went out
// (bench/README.md); under load, batching saves the wake-up and the system
// call per line, the formatting stays.
//
// Records are written in the order Handle received them. When the queue is
// full, Handle waits: a line is never dropped. What Close has not flushed
// is lost if the process dies, so Close it on every way out, and log values,
// not pointers to things that go on changing: a record is formatted later.
// Enabled is answered at once, from the next handler.
type Async struct {
	next slog.Handler
	q    *queue
}

// queue is the batch and writer goroutine that an Async handler and every
// handler derived from it (WithAttrs, WithGroup) share.
type queue struct {
	mu      sync.Mutex
	room    *sync.Cond // signalled when the writer takes a batch
	pending []queued
	max     int
	closed  bool

	wake   chan struct{} // cap 1: the first record of a batch wakes the writer
	done   chan struct{} // closed when the writer has returned
	linger time.Duration
	flush  func() error // after each batch; nil: nothing to flush
	direct sync.Mutex   // serialises writes after Close
}

type queued struct {
	h slog.Handler
	r slog.Record
}

// NewAsyncHandler starts the writer goroutine of a handler in front of
// next, with DefaultQueue and DefaultLinger. Close stops it.
//
// next gets each record without the context it was logged with (that
// context may be long gone when the record is written): put handlers
// that read the context, such as NewHandler (the request and trace ids),
// in front of the Async one, not behind it, as NewAsync does.
func NewAsyncHandler(next slog.Handler) *Async {
	return newAsync(next, DefaultQueue, DefaultLinger, nil)
}

// NewAsync is New with its lines formatted and written by a goroutine
// (Async) through a buffer flushed after each batch, off the path of the
// requests that log them. Close the returned handler before the process
// exits, to write what is still queued.
func NewAsync(w io.Writer, level slog.Leveler, service string) (*slog.Logger, *Async) {
	buf := bufio.NewWriterSize(w, 64<<10)
	async := newAsync(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: level}), DefaultQueue, DefaultLinger, buf.Flush)
	l := slog.New(NewHandler(async))
	if service != "" {
		l = l.With("service", service)
	}
	return l, async
}

func newAsync(next slog.Handler, size int, linger time.Duration, flush func() error) *Async {
	q := &queue{
		pending: make([]queued, 0, 64),
		max:     size,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		linger:  linger,
		flush:   flush,
	}
	q.room = sync.NewCond(&q.mu)
	go q.write()
	return &Async{next: next, q: q}
}

// write is the writer goroutine: woken by the first record of a batch, it
// lingers, then writes batches until the queue is empty.
func (q *queue) write() {
	defer close(q.done)
	var spare []queued
	for {
		// A closed wake means Close: no lingering, write what is left.
		if _, ok := <-q.wake; ok && q.linger > 0 {
			time.Sleep(q.linger)
		}
		for {
			q.mu.Lock()
			batch := q.pending
			q.pending = spare[:0]
			closed := q.closed
			q.room.Broadcast()
			q.mu.Unlock()
			for i := range batch {
				// The request's ids were taken from its context before the
				// record was queued (Handler); the caller's context has
				// moved on since, and the JSON handler does not read it.
				_ = batch[i].h.Handle(context.Background(), batch[i].r)
				batch[i] = queued{} // let the record's values go
			}
			if q.flush != nil && len(batch) > 0 {
				_ = q.flush()
			}
			spare = batch
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
		}
	}
}

// Enabled implements slog.Handler.
func (a *Async) Enabled(ctx context.Context, level slog.Level) bool {
	return a.next.Enabled(ctx, level)
}

// Handle implements slog.Handler: it queues a copy of r. After Close it
// writes r itself, once the queue is empty.
func (a *Async) Handle(ctx context.Context, r slog.Record) error {
	q := a.q
	it := queued{h: a.next, r: r.Clone()} // outside the lock: it may allocate
	q.mu.Lock()
	for len(q.pending) >= q.max && !q.closed {
		q.room.Wait()
	}
	if q.closed {
		q.mu.Unlock()
		<-q.done
		q.direct.Lock()
		defer q.direct.Unlock()
		err := a.next.Handle(ctx, r)
		if q.flush != nil {
			if ferr := q.flush(); err == nil {
				err = ferr
			}
		}
		return err
	}
	q.pending = append(q.pending, it)
	if len(q.pending) == 1 {
		// Under the lock, so that Close cannot close wake in between.
		select {
		case q.wake <- struct{}{}:
		default: // the writer is already due to run
		}
	}
	q.mu.Unlock()
	return nil
}

// WithAttrs implements slog.Handler; the new handler shares the queue.
func (a *Async) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Async{next: a.next.WithAttrs(attrs), q: a.q}
}

// WithGroup implements slog.Handler; the new handler shares the queue.
func (a *Async) WithGroup(name string) slog.Handler {
	return &Async{next: a.next.WithGroup(name), q: a.q}
}

// Close writes every queued record and stops the writer goroutine; records
// handled after it are written at once. It returns ctx's error if ctx ends
// first, and the goroutine then finishes the queue on its own. Calling it
// again is harmless.
func (a *Async) Close(ctx context.Context) error {
	q := a.q
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		q.room.Broadcast()
		close(q.wake)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
