package events_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/duetkit/duet/internal/await"
	"github.com/duetkit/duet/internal/tcpproxy"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// outage is a NATS server the test can take down and bring back.
type outage struct {
	bus      *events.Bus
	down, up func(t *testing.T)
}

// embeddedOutage runs a listening embedded server; down shuts it down, up
// starts a new one on the same port and store directory, as a restart would.
func embeddedOutage(t *testing.T) outage {
	dir := t.TempDir()
	srv, err := events.StartServer(events.ServerConfig{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := events.Connect(srv.ClientURL(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bus, err := events.OpenBus(t.Context(), nc, events.BusConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return outage{
		bus:  bus,
		down: func(t *testing.T) { srv.Shutdown() },
		up: func(t *testing.T) {
			var err error
			srv, err = events.StartServer(events.ServerConfig{Dir: dir, Listen: u.Host})
			if err != nil {
				t.Fatal(err)
			}
		},
	}
}

// externalOutage puts a TCP proxy between the client and the external
// server (which is not ours to stop): down closes the proxy and every
// connection through it, up listens again on the same port.
func externalOutage(t *testing.T, upstream string) outage {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := tcpproxy.Start(t, u.Host)
	nc, err := nats.Connect("nats://"+p.Addr(), nats.Name(t.Name()), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		// A server that advertises other addresses must not be
		// reached around the proxy.
		nats.IgnoreDiscoveredServers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	suffix := eventstest.Unique(t)
	bus, err := events.OpenBus(t.Context(), nc, events.BusConfig{Stream: "TEST_OUTAGE_" + suffix, Prefix: "outage" + suffix, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := bus.JS.DeleteStream(ctx, bus.Stream); err != nil {
			t.Errorf("delete stream: %v", err)
		}
	})
	return outage{bus: bus, down: func(t *testing.T) { p.Cut() }, up: func(t *testing.T) { p.Restore(t) }}
}

// TestOutboxCommitsWhileNATSIsDown: with NATS down the state change and its
// event still commit; the relay publishes the event once NATS is back, and
// the consumer, running throughout, receives it.
func TestOutboxCommitsWhileNATSIsDown(t *testing.T) {
	outages := map[string]func(t *testing.T) outage{"embedded": embeddedOutage}
	if u := os.Getenv(eventstest.NATSEnv); u != "" {
		outages["external"] = func(t *testing.T) outage { return externalOutage(t, u) }
	}
	for dbName, dbURL := range sqldbtest.URLs(t) {
		for natsName, newOutage := range outages {
			t.Run(dbName+"/"+natsName, func(t *testing.T) {
				ctx := t.Context()
				db := openDB(t, dbURL)
				o := newOutage(t)
				c := newCollector()
				consume(t, o.bus, "outage", []string{">"}, c, nil)
				relay := startRelay(t, db, o.bus)

				appendEvent(t, ctx, db, "order.confirmed", "before")
				relay.Notify()
				waitFor(t, "event before the outage", 10*time.Second, func() bool { return c.count("before") == 1 })
				// The relay marks a row after JetStream has it, so the
				// consumer can see the event first.
				waitFor(t, "outbox drained before the outage", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })

				o.down(t)
				waitFor(t, "disconnect", 10*time.Second, func() bool { return !o.bus.Conn.IsConnected() })
				appendEvent(t, ctx, db, "order.confirmed", "during") // commits: no error
				relay.Notify()
				if n := pendingRows(t, db); n != 1 {
					t.Fatalf("pending rows while NATS is down = %d, want 1", n)
				}

				o.up(t)
				// From here on a timeout also says where the events are:
				// in the outbox, in the stream, or with the consumer.
				wait := func(what string, d time.Duration, cond func() bool) {
					t.Helper()
					if !await.Within(d, cond) {
						t.Fatalf("timed out waiting for %s; %s", what, outageState(t, o.bus, db, "outage", c))
					}
				}
				wait("event from the outage", 30*time.Second, func() bool { return c.count("during") == 1 })
				wait("outbox drained", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
				appendEvent(t, ctx, db, "order.confirmed", "after")
				relay.Notify()
				wait("event after the outage", 10*time.Second, func() bool { return c.count("after") == 1 })
				if _, vals := c.snapshot(); len(vals) != 3 {
					t.Errorf("consumer saw %v, want before, during, after once each", vals)
				}
			})
		}
	}
}

// TestConsumerOutlivesAnEmptiedServer: NATS restarted without its store
// (a container without a volume) has neither the stream nor the durable
// consumer. The consumer creates both again when its pulls' heartbeats
// stop, so the events after the restart reach it without a restart of
// the process: it stopped for good, without a word, before. (The relay's
// own restoring of the stream is TestRelayRestoresAMissingStream's.)
func TestConsumerOutlivesAnEmptiedServer(t *testing.T) {
	ctx := t.Context()
	db := openDB(t, sqldbtest.URLs(t)["sqlite"])
	srv, err := events.StartServer(events.ServerConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if srv != nil { // nil when the restart failed
			srv.Shutdown()
		}
	})
	addr := srv.ClientURL()
	u, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := events.Connect(addr, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bus, err := events.OpenBus(ctx, nc, events.BusConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	consume(t, bus, "emptied", []string{">"}, c, nil)
	relay := startRelay(t, db, bus)
	appendEvent(t, ctx, db, "order.confirmed", "before")
	relay.Notify()
	waitFor(t, "event before the restart", 10*time.Second, func() bool { return c.count("before") == 1 })

	srv.Shutdown()
	waitFor(t, "disconnect", 10*time.Second, func() bool { return !nc.IsConnected() })
	srv, err = events.StartServer(events.ServerConfig{Dir: t.TempDir(), Listen: u.Host}) // an empty store
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reconnect", 10*time.Second, nc.IsConnected)
	// Nothing to publish yet: the consumer, finding its durable gone,
	// creates the stream itself.
	waitFor(t, "the consumer to create the stream again", 30*time.Second, func() bool {
		_, err := bus.JS.Stream(ctx, bus.Stream)
		return err == nil
	})
	appendEvent(t, ctx, db, "order.confirmed", "after")
	relay.Notify()
	if !await.Within(45*time.Second, func() bool { return c.count("after") == 1 }) {
		t.Fatalf("the event after the restart did not reach the consumer; %s", outageState(t, bus, db, "emptied", c))
	}
}

// outageState describes, for a failure message, how far the events got:
// the outbox rows not yet marked published, the stream, the durable
// consumer's progress and pending pull requests, the connection, and what
// the consumer handled.
func outageState(t *testing.T, bus *events.Bus, db *sqldb.DB, durable string, c *collector) string {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, handled := c.snapshot()
	state := fmt.Sprintf("outbox rows not published %d; connection %v; handled %q", pendingRows(t, db), bus.Conn.Status(), handled)
	if s, err := bus.JS.Stream(ctx, bus.Stream); err != nil {
		state += fmt.Sprintf("; stream: %v", err)
	} else {
		st := s.CachedInfo().State
		state += fmt.Sprintf("; stream messages %d, last sequence %d", st.Msgs, st.LastSeq)
	}
	if cons, err := bus.JS.Consumer(ctx, bus.Stream, durable); err != nil {
		state += fmt.Sprintf("; consumer: %v", err)
	} else {
		ci := cons.CachedInfo()
		state += fmt.Sprintf("; consumer delivered up to %d, acked up to %d, %d unacked, %d not delivered, %d pull requests waiting",
			ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumAckPending, ci.NumPending, ci.NumWaiting)
	}
	return state
}

// TestDuplicatePublishIsDropped: a row published twice, because a relay
// died between publishing and marking it or because two relays share an
// outbox, reaches the stream and its consumers once.
func TestDuplicatePublishIsDropped(t *testing.T) {
	tests := []struct {
		name   string
		relays int
		events int
		// replay makes the relays publish what they already published.
		replay bool
	}{
		{name: "relay restarts before marking", relays: 1, events: 1, replay: true},
		{name: "two relays on one outbox", relays: 2, events: 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
				ctx := t.Context()
				c := newCollector()
				consume(t, bus, "dedupe", []string{">"}, c, nil)
				var relays []*events.Relay
				for range tt.relays {
					relays = append(relays, startRelay(t, db, bus))
				}
				notify := func() {
					for _, r := range relays {
						r.Notify()
					}
				}
				var ids []string
				for i := range tt.events {
					ids = append(ids, appendEvent(t, ctx, db, "payment.captured", string(rune('a'+i%26))+string(rune('0'+i/26))))
					notify()
				}
				waitFor(t, "outbox drained", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
				if tt.replay {
					// What a relay that crashed after publishing leaves behind.
					if _, err := db.ExecContext(ctx, "UPDATE events_outbox SET published_time = NULL"); err != nil {
						t.Fatal(err)
					}
					notify()
					waitFor(t, "republished", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
				}
				// Events are delivered in order, so once a later event
				// has arrived any duplicate would have arrived before it.
				appendEvent(t, ctx, db, "payment.captured", "last")
				notify()
				waitFor(t, "last event", 10*time.Second, func() bool { return c.count("last") == 1 })
				msgs, _ := c.snapshot()
				seen := map[string]int{}
				for _, m := range msgs {
					seen[m.ID]++
				}
				for _, id := range ids {
					if seen[id] != 1 {
						t.Errorf("event %s delivered %d times, want 1", id, seen[id])
					}
				}
				stream, err := bus.JS.Stream(ctx, bus.Stream)
				if err != nil {
					t.Fatal(err)
				}
				info, err := stream.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if want := uint64(tt.events + 1); info.State.Msgs != want {
					t.Errorf("stream holds %d messages, want %d", info.State.Msgs, want)
				}
			})
		})
	}
}

// TestRedeliveredEventHasOneEffect: a handler that records its effect with
// Once, in one transaction, applies a redelivered event once, however the
// first delivery failed.
func TestRedeliveredEventHasOneEffect(t *testing.T) {
	errFirst := errors.New("first delivery fails")
	tests := []struct {
		name string
		// fail runs on the first delivery, before or after the commit.
		beforeCommit, afterCommit func() error
	}{
		{name: "error before commit", beforeCommit: func() error { return errFirst }},
		{name: "error after commit (ack lost)", afterCommit: func() error { return errFirst }},
		{name: "panic after commit", afterCommit: func() error { panic("handler bug") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
				ctx := t.Context()
				if _, err := db.ExecContext(ctx, "CREATE TABLE effects (event_id TEXT NOT NULL)"); err != nil {
					t.Fatal(err)
				}
				var mu sync.Mutex
				deliveries := map[string]int{}
				run(t, func(ctx context.Context) error {
					return events.Consume(ctx, bus, events.ConsumerConfig{Durable: "effects", Subjects: []string{"user.*"}, Logger: quiet},
						func(ctx context.Context, m events.Message) error {
							mu.Lock()
							deliveries[m.ID]++
							first := deliveries[m.ID] == 1
							mu.Unlock()
							err := db.InTx(ctx, func(tx *sql.Tx) error {
								isNew, err := events.Once(ctx, tx, db.Dialect, "effects", m.ID)
								if err != nil || !isNew {
									return err
								}
								if _, err := tx.ExecContext(ctx, db.Rebind("INSERT INTO effects (event_id) VALUES (?)"), m.ID); err != nil {
									return err
								}
								if first && tt.beforeCommit != nil {
									return tt.beforeCommit()
								}
								return nil
							})
							if err != nil {
								return err
							}
							if first && tt.afterCommit != nil {
								return tt.afterCommit()
							}
							return nil
						})
				})
				relay := startRelay(t, db, bus)
				id := appendEvent(t, ctx, db, "user.created", "u1")
				relay.Notify()
				waitFor(t, "redelivery", 10*time.Second, func() bool {
					mu.Lock()
					defer mu.Unlock()
					return deliveries[id] >= 2
				})
				// The consumer acks the second delivery; a later event
				// arriving shows nothing more is pending before it.
				last := appendEvent(t, ctx, db, "user.created", "u2")
				relay.Notify()
				waitFor(t, "second event", 10*time.Second, func() bool {
					mu.Lock()
					defer mu.Unlock()
					return deliveries[last] >= 1
				})
				var n int
				if err := db.QueryRowContext(ctx, db.Rebind("SELECT COUNT(*) FROM effects WHERE event_id = ?"), id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 1 {
					t.Errorf("effects of the redelivered event = %d, want 1", n)
				}
				mu.Lock()
				if deliveries[id] != 2 {
					t.Errorf("deliveries = %d, want 2", deliveries[id])
				}
				mu.Unlock()
			})
		})
	}
}

// TestRelayPurgesPublishedRows: rows published longer than Retention ago
// are deleted, PurgeChunk per statement and without waiting PurgeInterval
// between chunks, though after a pause as long as the last statement took,
// and no longer though wake-ups come meanwhile (on PostgreSQL, whose
// triggers time the statements); pending rows and recently published ones
// stay.
func TestRelayPurgesPublishedRows(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		ctx := t.Context()
		old := 2*events.PurgeChunk + 5
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			for i := range old {
				if _, err := events.Append(ctx, tx, db.Dialect, events.Event{
					Subject: "purge.old", AggregateID: fmt.Sprint("old-", i), Message: wrapperspb.String("old"),
				}); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, db.Rebind("UPDATE events_outbox SET published_time = ?"), time.Now().Add(-2*time.Hour).UnixMicro())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if db.Dialect == sqldb.Postgres {
			// Statement-level triggers record when each DELETE began,
			// and when it ended how many rows it removed.
			for _, stmt := range []string{
				`CREATE TABLE purge_starts (at TIMESTAMPTZ NOT NULL)`,
				`CREATE TABLE purge_statements (n BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL)`,
				// (and make each take 100 ms, so that a wake-up can come
				// during the pause after it)
				`CREATE FUNCTION start_purge() RETURNS trigger LANGUAGE plpgsql AS $$
				 BEGIN INSERT INTO purge_starts VALUES (clock_timestamp()); PERFORM pg_sleep(0.1); RETURN NULL; END $$`,
				`CREATE TRIGGER start_purge BEFORE DELETE ON events_outbox
				 FOR EACH STATEMENT EXECUTE FUNCTION start_purge()`,
				`CREATE FUNCTION count_purged() RETURNS trigger LANGUAGE plpgsql AS $$
				 BEGIN INSERT INTO purge_statements SELECT count(*), clock_timestamp() FROM gone; RETURN NULL; END $$`,
				`CREATE TRIGGER count_purged AFTER DELETE ON events_outbox
				 REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION count_purged()`,
			} {
				if _, err := db.ExecContext(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
		}
		var recent []string
		for i := range 3 {
			recent = append(recent, appendEvent(t, ctx, db, "purge.recent", fmt.Sprint("recent-", i)))
		}
		// A long poll, and on PostgreSQL a wake-up (a service's commit)
		// just after each DELETE: the pause after it must end when it is
		// due, not at the next poll.
		const poll = 5 * time.Second
		relay := events.NewRelay(db, bus, events.RelayConfig{
			Logger: quiet, PollInterval: poll, PublishTimeout: 2 * time.Second,
			Retention: time.Hour, PurgeInterval: time.Hour,
		})
		run(t, relay.Run)
		if db.Dialect == sqldb.Postgres {
			run(t, func(ctx context.Context) error {
				seen := 0
				for tick := time.NewTicker(10 * time.Millisecond); ; {
					select {
					case <-ctx.Done():
						tick.Stop()
						return nil
					case <-tick.C:
					}
					var n int
					if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM purge_statements").Scan(&n); err == nil && n > seen {
						seen = n
						relay.Notify()
					}
				}
			})
		}
		count := func(where string) int {
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM events_outbox WHERE "+where).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		waitFor(t, "old rows purged", 20*time.Second, func() bool { return count("subject = 'purge.old'") == 0 })
		waitFor(t, "recent rows published", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
		if n := count("subject = 'purge.recent'"); n != len(recent) {
			t.Errorf("%d recently published rows left, want %d", n, len(recent))
		}
		if db.Dialect != sqldb.Postgres {
			return
		}
		var statements, most, total int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(MAX(n), 0), COALESCE(SUM(n), 0) FROM purge_statements").Scan(&statements, &most, &total); err != nil {
			t.Fatal(err)
		}
		if most > events.PurgeChunk || total != old || statements < 3 {
			t.Errorf("%d DELETE statements removed %d rows, at most %d at once; want %d rows, at most %d per statement",
				statements, total, most, old, events.PurgeChunk)
		}
		// Each statement after a full one began no sooner than that one
		// took after it ended.
		rows, err := db.QueryContext(ctx, `SELECT s.at, e.at, e.n FROM
			(SELECT at, row_number() OVER (ORDER BY at) AS i FROM purge_starts) s JOIN
			(SELECT at, n, row_number() OVER (ORDER BY at) AS i FROM purge_statements) e ON s.i = e.i ORDER BY s.i`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var spans [][2]time.Time
		var full []bool
		for rows.Next() {
			var began, ended time.Time
			var n int
			if err := rows.Scan(&began, &ended, &n); err != nil {
				t.Fatal(err)
			}
			spans = append(spans, [2]time.Time{began, ended})
			full = append(full, n >= events.PurgeChunk)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(spans); i++ {
			took, pause := spans[i-1][1].Sub(spans[i-1][0]), spans[i][0].Sub(spans[i-1][1])
			if full[i-1] && (pause < took || pause >= poll/2) {
				t.Errorf("DELETE %d began %v after DELETE %d, which took %v: want a pause at least as long, not a poll's %v", i+1, pause, i, took, poll)
			}
		}
	})
}

// TestRelayRestoresAMissingStream: when no stream answers a publish (an
// external NATS restarted without its store, the stream deleted), the
// relay creates the stream again and goes on publishing; every publish
// failed until the process restarted, while the outbox grew.
func TestRelayRestoresAMissingStream(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		ctx := t.Context()
		relay := events.NewRelay(db, bus, events.RelayConfig{
			Logger: quiet, PollInterval: 20 * time.Millisecond, PublishTimeout: 2 * time.Second,
		})
		run(t, relay.Run)
		appendEvent(t, ctx, db, "restore.before", "before")
		waitFor(t, "the first event published", 10*time.Second, func() bool { return pendingRows(t, db) == 0 })
		if err := bus.JS.DeleteStream(ctx, bus.Stream); err != nil {
			t.Fatal(err)
		}
		appendEvent(t, ctx, db, "restore.after", "after")
		waitFor(t, "the event after the stream's loss published", 20*time.Second, func() bool { return pendingRows(t, db) == 0 })
		stream, err := bus.JS.Stream(ctx, bus.Stream)
		if err != nil {
			t.Fatalf("the stream after the relay published again: %v", err)
		}
		info, err := stream.Info(ctx)
		if err != nil || info.State.Msgs != 1 {
			t.Fatalf("stream info = %+v, %v; want the one event published since", info, err)
		}
	})
}

// TestRelayStopMarksWhatItPublished: a relay stopped in the middle of a
// batch still marks the rows JetStream stored before the stop. Left
// pending, they would be published again at the next start, as duplicates
// once the stream's deduplication window had passed.
func TestRelayStopMarksWhatItPublished(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		const n = 100
		for i := range n {
			appendEvent(t, t.Context(), db, "order.confirmed", fmt.Sprint(i))
		}
		relay := events.NewRelay(db, bus, events.RelayConfig{
			Logger: quiet, BatchSize: n, PollInterval: time.Hour, PublishTimeout: 2 * time.Second,
		})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// Stop the relay as soon as the stream holds its first event.
		sub, err := bus.Conn.Subscribe(bus.Subject("order.confirmed"), func(*nats.Msg) { cancel() })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		done := make(chan error, 1)
		go func() { done <- relay.Run(ctx) }()
		awaitStop(t, done, "the relay did not stop")
		info, err := bus.JS.Stream(t.Context(), bus.Stream)
		if err != nil {
			t.Fatal(err)
		}
		stored := int(info.CachedInfo().State.Msgs)
		if stored == 0 || stored == n {
			t.Fatalf("the stream holds %d events; the test wants a stop in the middle of the batch", stored)
		}
		if marked := n - pendingRows(t, db); marked != stored {
			t.Errorf("%d events marked published, the stream holds %d", marked, stored)
		}
	})
}

// TestRelayStopBoundedWhenNATSHangs: a relay stopped while JetStream does
// not answer its publish returns about a second later, not after its
// PublishTimeout: a process out of time at shutdown must not wait on a
// NATS server that has stopped answering.
func TestRelayStopBoundedWhenNATSHangs(t *testing.T) {
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		// Subjects no stream stores, where a subscriber takes each
		// publish and never answers it, as a stuck server would.
		hung := *bus
		hung.Prefix = "hung" + eventstest.Unique(t)
		got := make(chan struct{}, 1)
		sub, err := bus.Conn.Subscribe(hung.Subject(">"), func(*nats.Msg) {
			select {
			case got <- struct{}{}:
			default:
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		appendEvent(t, t.Context(), db, "order.confirmed", "stuck")
		relay := events.NewRelay(db, &hung, events.RelayConfig{
			Logger: quiet, PollInterval: time.Hour, PublishTimeout: time.Minute,
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- relay.Run(ctx) }()
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			cancel()
			t.Fatal("the relay never published")
		}
		cancel()
		awaitStop(t, done, "the stopped relay is still waiting on its publish")
		if n := pendingRows(t, db); n != 1 {
			t.Errorf("%d rows pending, want the unanswered one", n)
		}
	})
}

// awaitStop waits for a relay's Run to return what done receives, nil
// expected, failing the test with stuck if it takes longer than 10 s.
func awaitStop(t *testing.T, done <-chan error, stuck string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal(stuck)
	}
}

// TestAppendRefusesOversizedEvents: an event over MaxPayload is refused
// by Append, in the change's transaction. Stored, it would have been
// refused by NATS at every publish, holding every later event behind it in
// the outbox, which is published in order.
func TestAppendRefusesOversizedEvents(t *testing.T) {
	db := openDB(t, sqldbtest.URLs(t)["sqlite"])
	ctx := t.Context()
	tests := []struct {
		name       string
		size       int  // of the string value; its encoding adds a few bytes
		aggregate  int  // bytes of the aggregate id, a header
		traceState bool // a long tracestate in the caller's context
		wantErr    bool
	}{
		{"under the bound with its headers", events.MaxPayload - 2048, 3, false, false},
		{"the message alone at the bound", events.MaxPayload, 3, false, true},
		{"a long aggregate id takes it over", events.MaxPayload - 2048, 4096, false, true},
		{"a long tracestate takes it over", events.MaxPayload - 2048, 3, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctx
			if tt.traceState {
				ctx = withLongTraceState(t, ctx)
			}
			before := pendingRows(t, db)
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				_, err := events.Append(ctx, tx, db.Dialect, events.Event{
					Subject: "big.event", AggregateID: strings.Repeat("a", tt.aggregate), Message: wrapperspb.String(strings.Repeat("x", tt.size)),
				})
				return err
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Append of %d bytes: %v, want an error %v", tt.size, err, tt.wantErr)
			}
			want := before
			if !tt.wantErr {
				want++
			}
			if got := pendingRows(t, db); got != want {
				t.Errorf("%d rows pending, want %d", got, want)
			}
		})
	}
}

// TestRelayMetrics: a relay counts what it publishes and the batches that
// fail, and reports how long the oldest unpublished event has waited, so
// an outbox filling while NATS is away shows before anyone looks.
func TestRelayMetrics(t *testing.T) {
	ctx := t.Context()
	db := openDB(t, sqldbtest.URLs(t)["sqlite"])
	o := embeddedOutage(t)
	m := metrics.New()
	relay := events.NewRelay(db, o.bus, events.RelayConfig{
		Logger: quiet, Metrics: m, Name: "shop", PollInterval: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond, PublishTimeout: 2 * time.Second,
	})
	// A second relay on the registry shares the collectors.
	events.NewRelay(db, o.bus, events.RelayConfig{Logger: quiet, Metrics: m, Name: "other"})
	run(t, relay.Run)
	valueOf := func(name, outbox string) float64 {
		t.Helper()
		families, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			for _, s := range f.GetMetric() {
				if s.GetLabel()[0].GetValue() == outbox {
					return s.GetCounter().GetValue() + s.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("no %s{outbox=%q}", name, outbox)
		return 0
	}
	value := func(name string) float64 { t.Helper(); return valueOf(name, "shop") }
	for _, name := range []string{events.RelayPublishedMetric, events.RelayFailuresMetric, events.OutboxOldestMetric} {
		valueOf(name, "other") // registered on m too, or this fails
	}
	appendEvent(t, ctx, db, "order.confirmed", "a")
	appendEvent(t, ctx, db, "order.confirmed", "b")
	relay.Notify()
	waitFor(t, "two published, none waiting", 10*time.Second, func() bool {
		return value(events.RelayPublishedMetric) == 2 && value(events.OutboxOldestMetric) == 0
	})
	if n := value(events.RelayFailuresMetric); n != 0 {
		t.Errorf("%v failures with NATS up", n)
	}

	o.down(t)
	waitFor(t, "disconnect", 10*time.Second, func() bool { return !o.bus.Conn.IsConnected() })
	appendEvent(t, ctx, db, "order.confirmed", "c")
	relay.Notify()
	waitFor(t, "failures counted, the event waiting", 10*time.Second, func() bool {
		return value(events.RelayFailuresMetric) >= 1 && value(events.OutboxOldestMetric) > 0
	})
	o.up(t)
	waitFor(t, "the waiting event published", 30*time.Second, func() bool {
		return value(events.RelayPublishedMetric) == 3 && value(events.OutboxOldestMetric) == 0
	})
}

// withLongTraceState returns ctx carrying a span context whose tracestate
// is as long as W3C allows (32 members of 256-character values, ~8 KB),
// which Append stores as a header of the event.
func withLongTraceState(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	var ts trace.TraceState
	for i := range 32 {
		var err error
		if ts, err = ts.Insert(fmt.Sprintf("k%d", i), strings.Repeat("v", 256)); err != nil {
			t.Fatal(err)
		}
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, TraceState: ts,
	})
	return trace.ContextWithSpanContext(ctx, sc)
}
