package events_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/kit/tracing"
)

// TestNoSpanWithoutAnExporter: with the SDK's provider global but no
// exporter (tracing.Setup without an endpoint, how duet runs by default),
// handling an event records no span; the consumer used to record one an
// event, only for it to be dropped. The handler's context still carries
// the event's trace.
func TestNoSpanWithoutAnExporter(t *testing.T) {
	if tracing.Exporting() {
		t.Skip("an exporter is configured")
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = tp.Shutdown(context.Background())
	})

	db := openDB(t, sqldbtest.URLs(t)["sqlite"])
	bus := eventstest.Embedded(t)
	var mu sync.Mutex
	var handled trace.Span
	untraced := 0
	// The consumer's own context carries a span of the caller's, which
	// handling an event that carries no trace must leave alone.
	own := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = own.Shutdown(context.Background()) })
	_, outer := own.Tracer("caller").Start(context.Background(), "consuming")
	defer outer.End()
	run(t, func(ctx context.Context) error {
		return events.Consume(trace.ContextWithSpan(ctx, outer), bus, events.ConsumerConfig{Durable: "untraced", Subjects: []string{"user.updated", "user.created"}, Logger: quiet},
			func(ctx context.Context, m events.Message) error {
				mu.Lock()
				defer mu.Unlock()
				if m.Subject == "user.created" {
					untraced++
					return nil
				}
				handled = trace.SpanFromContext(ctx)
				return nil
			})
	})
	relay := startRelay(t, db, bus)

	appendEvent(t, t.Context(), db, "user.created", "untraced")
	relay.Notify()
	waitFor(t, "the untraced event handled", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return untraced > 0
	})
	if !outer.IsRecording() {
		t.Error("handling an untraced event ended the span of the consumer's context")
	}

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	caller := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	appendEvent(t, trace.ContextWithSpanContext(t.Context(), caller), db, "user.updated", "x")
	relay.Notify()
	waitFor(t, "the event handled", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled != nil
	})
	mu.Lock()
	span := handled
	mu.Unlock()
	if sc := span.SpanContext(); span.IsRecording() || sc.TraceID() != traceID || !sc.IsSampled() {
		t.Errorf("handler's span: recording %v, trace %v, sampled %v; want none recorded, the caller's trace, sampled",
			span.IsRecording(), sc.TraceID(), sc.IsSampled())
	}
	if n := len(rec.Started()); n != 0 {
		t.Errorf("%d spans started without an exporter, want none", n)
	}
}
