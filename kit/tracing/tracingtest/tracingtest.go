// Package tracingtest records the spans a test's code exports, for tests
// of code that traces with kit/tracing.
package tracingtest

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/duetkit/duet/kit/tracing"
)

// Record installs (tracing.Install) a tracer provider that exports to the
// returned recorder until the test ends, when the previous one is back.
// The provider is the process's: tests that record must not run in
// parallel with tests that trace.
func Record(t testing.TB) *tracetest.SpanRecorder {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	restore := tracing.Install(tp)
	t.Cleanup(func() {
		restore()
		_ = tp.Shutdown(context.Background())
	})
	return rec
}
