package system_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/tracing"
)

// TestRESTSpans: with an exporter, a REST call is one sampled trace from
// the gateway's server span through its gRPC client span to the user
// service's server span. The gateway used to make up a trace that was not
// sampled, and the default sampler (parent-based) dropped every span
// behind it: nothing was exported for any REST call.
func TestRESTSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	restore := tracing.Install(tp)
	t.Cleanup(func() {
		restore()
		_ = tp.Shutdown(context.Background())
	})

	sys := start(t, system.Config{})
	if r := do(t, "POST", "http://"+sys.HTTPAddr+"/v1/users", `{"email":"ada@example.com","name":"Ada"}`); r.status != 200 {
		t.Fatalf("create user: %d %s", r.status, r.raw)
	}
	// The spans end as each side finishes, some after the response.
	var kinds map[trace.SpanKind][]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		kinds = map[trace.SpanKind][]string{}
		var root trace.TraceID
		for _, s := range rec.Ended() {
			if s.Name() == "HTTP POST" && s.SpanKind() == trace.SpanKindServer && s.SpanContext().IsSampled() {
				root = s.SpanContext().TraceID()
			}
		}
		for _, s := range rec.Ended() {
			if root.IsValid() && s.SpanContext().TraceID() == root {
				kinds[s.SpanKind()] = append(kinds[s.SpanKind()], s.Name())
			}
		}
		if len(kinds[trace.SpanKindServer]) >= 2 && len(kinds[trace.SpanKindClient]) >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(kinds[trace.SpanKindServer]) < 2 || len(kinds[trace.SpanKindClient]) < 1 {
		t.Errorf("spans of the REST call's trace by kind: %v; want the gateway's and the user service's server spans and a client span", kinds)
	}
}
