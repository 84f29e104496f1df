package events_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// TestTraceContextAndRequestIDTravel: the request that appended an event
// is the one its consumer's context names: same request id, same trace.
func TestTraceContextAndRequestIDTravel(t *testing.T) {
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	state, _ := trace.ParseTraceState("duet=yes")
	caller := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, TraceState: state,
	})
	tests := []struct {
		name      string
		ctx       func(ctx context.Context) context.Context
		requestID string
		traced    bool
	}{
		{
			name: "request id and trace",
			ctx: func(ctx context.Context) context.Context {
				return trace.ContextWithSpanContext(requestid.NewContext(ctx, "req-42"), caller)
			},
			requestID: "req-42", traced: true,
		},
		{name: "neither", ctx: func(ctx context.Context) context.Context { return ctx }},
	}
	matrix(t, func(t *testing.T, db *sqldb.DB, bus *events.Bus) {
		type got struct {
			msg     events.Message
			handler context.Context
		}
		var mu sync.Mutex
		seen := map[string]got{}
		run(t, func(ctx context.Context) error {
			return events.Consume(ctx, bus, events.ConsumerConfig{Durable: "trace", Subjects: []string{"user.updated"}, Logger: quiet},
				func(ctx context.Context, m events.Message) error {
					mu.Lock()
					seen[m.ID] = got{m, ctx}
					mu.Unlock()
					return nil
				})
		})
		relay := startRelay(t, db, bus)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var id string
				ctx := tt.ctx(t.Context())
				if err := db.InTx(ctx, func(tx *sql.Tx) error {
					var err error
					id, err = events.Append(ctx, tx, db.Dialect, events.Event{Subject: "user.updated", AggregateID: "u1", Message: wrapperspb.String("x")})
					return err
				}); err != nil {
					t.Fatal(err)
				}
				relay.Notify()
				waitFor(t, "event", 10*time.Second, func() bool {
					mu.Lock()
					defer mu.Unlock()
					_, ok := seen[id]
					return ok
				})
				mu.Lock()
				g := seen[id]
				mu.Unlock()

				if g.msg.RequestID != tt.requestID {
					t.Errorf("RequestID = %q, want %q", g.msg.RequestID, tt.requestID)
				}
				// Message.Context on a fresh context, and the context the
				// handler was given, both carry the caller's request.
				for name, ctx := range map[string]context.Context{
					"Message.Context": g.msg.Context(context.Background()),
					"handler context": g.handler,
				} {
					if got := requestid.FromContext(ctx); got != tt.requestID {
						t.Errorf("%s: request id = %q, want %q", name, got, tt.requestID)
					}
					sc := trace.SpanContextFromContext(ctx)
					if !tt.traced {
						// The handler's context starts a trace of its own,
						// as kit/server does for a call that brings none;
						// the message itself carries none.
						if started := name == "handler context"; sc.IsValid() != started {
							t.Errorf("%s: trace %v (valid %v) from an untraced request, want a new one %v", name, sc.TraceID(), sc.IsValid(), started)
						}
						continue
					}
					if sc.TraceID() != traceID || !sc.IsSampled() || sc.TraceState().Get("duet") != "yes" {
						t.Errorf("%s: span context = %+v, want trace %v", name, sc, traceID)
					}
				}
				if tt.traced {
					remote := trace.SpanContextFromContext(g.msg.Context(context.Background()))
					if remote.SpanID() != spanID || !remote.IsRemote() {
						t.Errorf("remote parent = %v (remote %v), want span %v", remote.SpanID(), remote.IsRemote(), spanID)
					}
					if h := g.msg.Header.Get(events.HeaderTraceParent); h != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
						t.Errorf("traceparent header = %q", h)
					}
				}
				if g.msg.Header.Get(events.HeaderMsgID) != id || g.msg.Header.Get(events.HeaderAggregateID) != "u1" ||
					g.msg.Header.Get(events.HeaderEventType) != "google.protobuf.StringValue" || g.msg.Header.Get(events.HeaderOccurTime) == "" {
					t.Errorf("headers = %v", g.msg.Header)
				}
			})
		}
	})
}

// TestInvalidInput: mistakes in calls are errors, never panics or rows.
func TestInvalidInput(t *testing.T) {
	db := openDB(t, sqldbtest.URLs(t)["sqlite"])
	bus := eventstest.Embedded(t)
	ctx := t.Context()
	appendTests := []struct {
		name string
		ev   events.Event
	}{
		{name: "empty subject", ev: events.Event{Message: wrapperspb.String("x")}},
		{name: "wildcard subject", ev: events.Event{Subject: "order.*", Message: wrapperspb.String("x")}},
		{name: "empty token", ev: events.Event{Subject: "order..confirmed", Message: wrapperspb.String("x")}},
		{name: "space", ev: events.Event{Subject: "order confirmed", Message: wrapperspb.String("x")}},
		{name: "no message", ev: events.Event{Subject: "order.confirmed"}},
	}
	for _, tt := range appendTests {
		t.Run("Append/"+tt.name, func(t *testing.T) {
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				_, err := events.Append(ctx, tx, db.Dialect, tt.ev)
				return err
			})
			if err == nil {
				t.Error("no error")
			}
		})
	}
	if n := pendingRows(t, db); n != 0 {
		t.Errorf("rows after failed appends = %d", n)
	}
	handler := func(context.Context, events.Message) error { return nil }
	consumeTests := []struct {
		name string
		bus  *events.Bus
		cfg  events.ConsumerConfig
	}{
		{name: "no bus", cfg: events.ConsumerConfig{Durable: "d", Subjects: []string{"a"}}},
		{name: "no durable", bus: bus, cfg: events.ConsumerConfig{Subjects: []string{"a"}}},
		{name: "no subjects", bus: bus, cfg: events.ConsumerConfig{Durable: "d"}},
		{name: "bad subject", bus: bus, cfg: events.ConsumerConfig{Durable: "d", Subjects: []string{"a.>.b"}}},
	}
	for _, tt := range consumeTests {
		t.Run("Consume/"+tt.name, func(t *testing.T) {
			if err := events.Consume(ctx, tt.bus, tt.cfg, handler); err == nil {
				t.Error("no error")
			}
		})
	}
	if _, err := events.OpenBus(ctx, bus.Conn, events.BusConfig{Stream: "X", Prefix: "bad prefix"}); err == nil {
		t.Error("OpenBus with a bad prefix: no error")
	}
	if _, err := events.StartServer(events.ServerConfig{}); err == nil {
		t.Error("StartServer without a directory: no error")
	}
	if err := (events.Message{Type: "duet.user.v1.UserCreated"}).Unmarshal(&wrapperspb.StringValue{}); err == nil {
		t.Error("Unmarshal into the wrong type: no error")
	}
}
