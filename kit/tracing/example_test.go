package tracing_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/duetkit/duet/kit/tracing"
)

// An edge such as the REST gateway continues the caller's W3C trace (or
// starts one), and passes it on to the services behind it with Header;
// kit/client does the passing on for every call.
func ExampleContinue() {
	in := http.Header{}
	in.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx := tracing.Continue(context.Background(), propagation.HeaderCarrier(in))
	traceparent, _ := tracing.Header(ctx)
	fmt.Println(traceparent)

	// A request without one gets a trace of its own, so its log lines and
	// every hop behind it still share an id.
	ctx = tracing.Continue(context.Background(), propagation.HeaderCarrier(http.Header{}))
	fmt.Println(trace.SpanContextFromContext(ctx).HasTraceID())
	// Output:
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// true
}

// A public edge starts a trace of its own whatever its caller sent, so a
// client can neither pick the trace ids the services log under nor mark
// its calls sampled; kit/server does this with Config.PublicEndpoint.
func ExampleNewTrace() {
	in := http.Header{}
	in.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	// A trusting edge would Continue(ctx, propagation.HeaderCarrier(in)).
	ctx := tracing.NewTrace(context.Background())
	traceparent, _ := tracing.Header(ctx)
	fmt.Println(strings.Contains(traceparent, "4bf92f3577b34da6a3ce929d0e0e4736"), strings.HasSuffix(traceparent, "-01"))
	// Output:
	// false true
}

// Install records spans with a provider of one's own (an exporter Setup
// does not make, or a test's recorder, as here): servers, clients and the
// REST gateway built after it record spans through otelgrpc and otelhttp.
func ExampleInstall() {
	rec := tracetest.NewSpanRecorder()
	restore := tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	fmt.Println(tracing.Exporting())
	restore()
	fmt.Println(tracing.Exporting())
	// Output:
	// true
	// false
}
