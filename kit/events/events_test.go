package events_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/duetkit/duet/internal/await"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's pool opener lives as long as its DB; every DB is
		// closed in cleanup, but the goroutine exits asynchronously.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// quiet is a logger for code under test whose warnings are expected.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openDB opens a migrated database for url, closed at cleanup.
func openDB(t *testing.T, url string) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := events.Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// appendEvent commits one event carrying value and returns its id.
func appendEvent(t *testing.T, ctx context.Context, db *sqldb.DB, subject, value string) string {
	t.Helper()
	var id string
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		id, err = events.Append(ctx, tx, db.Dialect, events.Event{
			Subject: subject, AggregateID: "agg-" + value, Message: wrapperspb.String(value),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startRelay runs a relay until the test ends.
func startRelay(t *testing.T, db *sqldb.DB, bus *events.Bus) *events.Relay {
	t.Helper()
	relay := events.NewRelay(db, bus, events.RelayConfig{
		Logger: quiet, PollInterval: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		PublishTimeout: 2 * time.Second,
	})
	run(t, relay.Run)
	return relay
}

// run calls fn in a goroutine until the test ends, then waits for it and
// checks that it returned nil.
func run(t *testing.T, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("returned %v after cancel, want nil", err)
		}
	})
}

// collector records the messages a consumer handled.
type collector struct {
	mu   sync.Mutex
	msgs []events.Message
	vals []string
}

func newCollector() *collector { return &collector{} }

func (c *collector) add(m events.Message, v string) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.vals = append(c.vals, v)
	c.mu.Unlock()
}

// count reports how many times value was handled.
func (c *collector) count(value string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.vals {
		if v == value {
			n++
		}
	}
	return n
}

func (c *collector) snapshot() ([]events.Message, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]events.Message(nil), c.msgs...), append([]string(nil), c.vals...)
}

// waitFor is await.Until, failing the test once d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	await.Until(t, what, d, cond)
}

// consume runs a consumer on bus that decodes StringValue events into c.
func consume(t *testing.T, bus *events.Bus, durable string, subjects []string, c *collector, fail func(m events.Message) error) {
	t.Helper()
	run(t, func(ctx context.Context) error {
		return events.Consume(ctx, bus, events.ConsumerConfig{
			Durable: durable, Subjects: subjects, AckWait: 5 * time.Second, Logger: quiet,
		}, func(ctx context.Context, m events.Message) error {
			if fail != nil {
				if err := fail(m); err != nil {
					return err
				}
			}
			var v wrapperspb.StringValue
			if err := m.Unmarshal(&v); err != nil {
				return err
			}
			c.add(m, v.GetValue())
			return nil
		})
	})
}

// matrix runs fn for every database and bus available, each subtest with a
// fresh database and a fresh bus of its own.
func matrix(t *testing.T, fn func(t *testing.T, db *sqldb.DB, bus *events.Bus)) {
	eventstest.Matrix(t, func(t *testing.T, url string, bus *events.Bus) {
		fn(t, openDB(t, url), bus)
	})
}

func TestRelayPublishesInOrderAndConsumerReceives(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		ctx := t.Context()
		c := newCollector()
		consume(t, bus, "orders-"+eventstest.Unique(t), []string{"order.*"}, c, nil)
		relay := startRelay(t, db, bus)
		var ids []string
		want := []string{"a", "b", "c", "d", "e"}
		for _, v := range want {
			ids = append(ids, appendEvent(t, ctx, db, "order.confirmed", v))
			relay.Notify()
		}
		// An event outside the consumer's subjects is not delivered.
		appendEvent(t, ctx, db, "user.created", "other")
		relay.Notify()
		waitFor(t, "5 events", 10*time.Second, func() bool { _, v := c.snapshot(); return len(v) >= 5 })
		msgs, vals := c.snapshot()
		for i := range want {
			if vals[i] != want[i] {
				t.Errorf("event %d = %q, want %q (order %v)", i, vals[i], want[i], vals)
			}
			m := msgs[i]
			if m.ID != ids[i] || m.Subject != "order.confirmed" || m.Type != string(proto.MessageName(&wrapperspb.StringValue{})) ||
				m.AggregateID != "agg-"+want[i] || m.OccurTime.IsZero() || m.NumDelivered != 1 {
				t.Errorf("message %d = %+v", i, m)
			}
		}
		waitFor(t, "outbox drained", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
	})
}

// TestRelayMarksWholeBatch: one pass of the relay over a batch of two full
// chunks of the marking UPDATE and a short one marks every row it
// published. The relay polls once an hour, so rows that pass left
// unmarked would stay so for the rest of the test.
func TestRelayMarksWholeBatch(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		const n = 69 // 32 + 32 + 5
		c := newCollector()
		consume(t, bus, "batch-"+eventstest.Unique(t), []string{"order.*"}, c, nil)
		for i := range n {
			appendEvent(t, t.Context(), db, "order.confirmed", fmt.Sprint(i))
		}
		relay := events.NewRelay(db, bus, events.RelayConfig{Logger: quiet, PollInterval: time.Hour, PublishTimeout: 2 * time.Second})
		run(t, relay.Run)
		waitFor(t, "every event", 10*time.Second, func() bool { _, v := c.snapshot(); return len(v) >= n })
		waitFor(t, "outbox marked", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
	})
}

// TestConsumeSeveralSubjects: a consumer of several subjects gets the
// events of those and no other, on every server: nats-server 2.10 and later
// filter by all of them, older ones (this machine's 2.9) by one that covers
// them, and the consumer drops the rest.
func TestConsumeSeveralSubjects(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		t.Logf("NATS server %s", bus.Conn.ConnectedServerVersion())
		c := newCollector()
		consume(t, bus, "several-"+eventstest.Unique(t), []string{"order.confirmed", "payment.*"}, c, nil)
		for _, ev := range []struct{ subject, value string }{
			{"order.confirmed", "a"},
			{"order.cancelled", "skip-1"}, // inside the covering order.> but not asked for
			{"payment.charged", "b"},
			{"user.created", "skip-2"},
			{"payment.refunded", "c"},
			{"order.confirmed.late", "skip-3"},
			{"order.confirmed", "last"},
		} {
			appendEvent(t, t.Context(), db, ev.subject, ev.value)
		}
		startRelay(t, db, bus).Notify()
		// Events arrive in stream order, so once the last one is in,
		// every skipped one has been seen and dropped.
		waitFor(t, "the last event", 10*time.Second, func() bool { return c.count("last") > 0 })
		_, vals := c.snapshot()
		if want := []string{"a", "b", "c", "last"}; !slices.Equal(vals, want) {
			t.Fatalf("handled %q, want %q", vals, want)
		}
	})
}

// pendingRows counts unpublished outbox rows.
func pendingRows(t *testing.T, db *sqldb.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM events_outbox WHERE published_time IS NULL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// onceInTx runs Once for consumer and id in a transaction of its own.
func onceInTx(t *testing.T, ctx context.Context, db *sqldb.DB, consumer, id string) bool {
	t.Helper()
	var first bool
	if err := db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		first, err = events.Once(ctx, tx, db.Dialect, consumer, id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return first
}

func TestOnce(t *testing.T) {
	for name, url := range sqldbtest.URLs(t) {
		t.Run(name, func(t *testing.T) {
			db := openDB(t, url)
			ctx := t.Context()
			once := func(consumer, id string) bool { return onceInTx(t, ctx, db, consumer, id) }
			steps := []struct {
				consumer, id string
				want         bool
			}{
				{"mail", "e1", true},
				{"mail", "e1", false},
				{"audit", "e1", true},
				{"mail", "e2", true},
				{"audit", "e1", false},
			}
			for _, s := range steps {
				if got := once(s.consumer, s.id); got != s.want {
					t.Errorf("Once(%s, %s) = %v, want %v", s.consumer, s.id, got, s.want)
				}
			}
			// A rolled-back transaction does not mark the event.
			errRollback := errors.New("rollback")
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				first, err := events.Once(ctx, tx, db.Dialect, "mail", "e3")
				if err != nil || !first {
					t.Errorf("Once in rolled-back tx = %v, %v", first, err)
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatal(err)
			}
			if !once("mail", "e3") {
				t.Error("event marked by a rolled-back transaction")
			}
			if _, err := events.Once(ctx, nil, db.Dialect, "", "x"); err == nil {
				t.Error("Once without consumer: no error")
			}
		})
	}
}

// TestPermanentFailureTerminates: an event whose handler fails with a
// Permanent error is delivered once and terminated, not redelivered: it no
// longer counts against the consumer's unacknowledged events (JetStream
// stops delivering at MaxAckPending of them). An event the consumer cannot
// decode fails that way by itself.
func TestPermanentFailureTerminates(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		ctx := t.Context()
		durable := "permanent-" + eventstest.Unique(t)
		c := newCollector()
		var mu sync.Mutex
		seen := map[string]int{}
		run(t, func(ctx context.Context) error {
			return events.Consume(ctx, bus, events.ConsumerConfig{
				Durable: durable, Subjects: []string{"order.*"}, AckWait: 5 * time.Second, Logger: quiet,
			}, func(ctx context.Context, m events.Message) error {
				mu.Lock()
				seen[m.Subject]++
				mu.Unlock()
				if m.Subject == "order.undecodable" {
					m.Data = m.Data[:len(m.Data)-1] // cut inside its one field
					var v wrapperspb.StringValue
					return m.Unmarshal(&v)
				}
				var v wrapperspb.StringValue
				if err := m.Unmarshal(&v); err != nil {
					return err
				}
				if v.GetValue() == "refused" {
					return events.Permanent(errors.New("refused for good"))
				}
				c.add(m, v.GetValue())
				return nil
			})
		})
		startRelay(t, db, bus)
		appendEvent(t, ctx, db, "order.refused", "refused")
		appendEvent(t, ctx, db, "order.undecodable", "x")
		appendEvent(t, ctx, db, "order.confirmed", "good")
		waitFor(t, "the good event", 10*time.Second, func() bool { return c.count("good") == 1 })
		cons, err := bus.JS.Consumer(ctx, bus.Stream, durable)
		if err != nil {
			t.Fatal(err)
		}
		// Naked for a later redelivery, the two would stay pending.
		waitFor(t, "no event pending", 4*time.Second, func() bool {
			info, err := cons.Info(ctx)
			return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == info.Delivered.Stream
		})
		mu.Lock()
		defer mu.Unlock()
		if seen["order.refused"] != 1 || seen["order.undecodable"] != 1 {
			t.Errorf("deliveries %v, want one each", seen)
		}
	})
}

func TestIsPermanent(t *testing.T) {
	base := errors.New("bad")
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"marked", events.Permanent(base), true},
		{"wrapped after marking", fmt.Errorf("handling: %w", events.Permanent(base)), true},
		{"undecodable", events.Message{Data: []byte{0xff}}.Unmarshal(&wrapperspb.StringValue{}), true},
		// The next version of the consumer may know it.
		{"another type", events.Message{Type: "duet.X"}.Unmarshal(&wrapperspb.StringValue{}), false},
	} {
		if got := events.IsPermanent(tt.err); got != tt.want {
			t.Errorf("%s: IsPermanent(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
	if events.Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
	if !errors.Is(events.Permanent(base), base) {
		t.Error("Permanent hides the error it marks")
	}
}

// TestStopHandsBackFetchedEvents: a consumer that stops naks the events it
// had fetched ahead and not handled, so another process on the same
// durable gets them at once. Left to the server, they came back 5.1 s
// later on the embedded one (the pull request's expiry; their AckWait at
// worst). Against an external server the bound is looser: nats.go's
// iterator can stall for ~5 s there (see pullHeartbeat). Checked for
// Consume and ConsumeBatch.
func TestStopHandsBackFetchedEvents(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
				const n = 20
				durable := "handback-" + eventstest.Unique(t)
				cfg := events.ConsumerConfig{Durable: durable, Subjects: []string{"order.*"}, AckWait: 30 * time.Second, Logger: quiet}
				startRelay(t, db, bus)
				for i := range n {
					appendEvent(t, t.Context(), db, "order.confirmed", fmt.Sprint(i))
				}
				waitFor(t, "every event in the stream", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
				// The first consumer holds its first event until it
				// stops, by which time it has fetched more.
				ctx, cancel := context.WithCancel(t.Context())
				holding := make(chan struct{}, 1)
				hold := func(ctx context.Context) error {
					select {
					case holding <- struct{}{}:
					default:
					}
					<-ctx.Done()
					return ctx.Err()
				}
				done := make(chan error, 1)
				go func() {
					each := func(ctx context.Context, _ events.Message) error { return hold(ctx) }
					if batch {
						done <- events.ConsumeBatch(ctx, bus, cfg, func(ctx context.Context, _ []events.Message) error { return hold(ctx) }, each)
					} else {
						done <- events.Consume(ctx, bus, cfg, each)
					}
				}()
				select {
				case <-holding:
				case <-time.After(10 * time.Second):
					cancel()
					t.Fatal("the first consumer got no event")
				}
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				c := newCollector()
				consume(t, bus, durable, []string{"order.*"}, c, nil)
				within := 10 * time.Second
				if strings.Contains(t.Name(), "/embedded") {
					within = 3 * time.Second
				}
				waitFor(t, "every event at the second consumer", within, func() bool {
					for i := range n {
						if c.count(fmt.Sprint(i)) == 0 {
							return false
						}
					}
					return true
				})
			})
		})
	}
}
