// Package tracing sets up OpenTelemetry for a Duet process: W3C trace
// context propagation (in gRPC metadata, HTTP and NATS headers) and a tracer
// provider that exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
// (Setup), or one of the caller's own (Install).
//
// Without an endpoint no spans are recorded (there is nowhere to send
// them), but the trace context still flows between services — kit/server
// and kit/client carry it (Incoming, Header, StreamServerInterceptor) — so
// every log line of every hop names its trace.
package tracing

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Setup installs the global propagator and tracer provider for service and
// returns a function that flushes and stops them (and so ends Exporting);
// call it on shutdown.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	}
	exporter := false
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, errors.Join(errors.New("tracing: OTLP exporter"), err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
		exporter = true
	}
	tp := sdktrace.NewTracerProvider(opts...)
	if !exporter {
		otel.SetTracerProvider(tp)
		return tp.Shutdown, nil
	}
	restore := Install(tp)
	return func(ctx context.Context) error {
		restore()
		return tp.Shutdown(ctx)
	}, nil
}

// Install makes tp the global tracer provider and turns span recording on
// in kit/server, kit/client and the REST gateway (otelgrpc's and otelhttp's
// handlers) and kit/events' consumer, as Setup does with its
// OTLP exporter: for a process that sends spans elsewhere (an exporter or
// sampler of its own), or a test that records them. Servers and clients
// decide when they are built, so call it first. restore puts back the
// provider and the recording from before.
func Install(tp trace.TracerProvider) (restore func()) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	prev, was := otel.GetTracerProvider(), exporting.Load()
	otel.SetTracerProvider(tp)
	exporting.Store(true)
	return func() {
		exporting.Store(was)
		otel.SetTracerProvider(prev)
	}
}

// exporting is set by Install, and so by Setup when spans go to an
// exporter.
var exporting atomic.Bool

// Exporting reports whether spans are recorded: Setup configured an
// exporter, or a provider was Installed. Without one,
// recording spans costs CPU for nothing: kit/server and kit/client then
// only carry the W3C trace context (Incoming and Header), so trace ids
// still flow between services and into logs.
func Exporting() bool { return exporting.Load() }

// header is a TextMapCarrier over the two W3C headers, read from gRPC
// metadata without copying it.
type header struct{ parent, state string }

func (h *header) Get(key string) string {
	switch key {
	case "traceparent":
		return h.parent
	case "tracestate":
		return h.state
	}
	return ""
}

func (h *header) Set(key, value string) {
	switch key {
	case "traceparent":
		h.parent = value
	case "tracestate":
		h.state = value
	}
}

func (h *header) Keys() []string { return []string{"traceparent", "tracestate"} }

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// Incoming returns ctx carrying the trace context of an incoming gRPC
// call's metadata, or a new trace (see Continue) when the caller sent
// none, so that every request has a trace id for its logs.
func Incoming(ctx context.Context) context.Context {
	parent := first(metadata.ValueFromIncomingContext(ctx, "traceparent"))
	if parent == "" {
		// No tracestate lookup: without a traceparent it means nothing,
		// and grpc-go's lookup of an absent key walks the whole metadata.
		return NewTrace(ctx)
	}
	return Continue(ctx, &header{parent: parent, state: first(metadata.ValueFromIncomingContext(ctx, "tracestate"))})
}

// Continue returns ctx carrying the W3C trace context found in carrier
// (HTTP headers, say: propagation.HeaderCarrier), or a new trace when it
// holds none — as an edge such as the REST gateway needs, so that its own
// log lines and every hop behind it share one trace id. A span already in
// ctx is kept.
//
// A new trace is marked sampled. Its starter records nothing, so it leaves
// the decision to the services behind it: a parent-based sampler there
// (the SDK's default) records the trace as it would had the trace started
// there, where a trace marked unsampled would have every span of every
// hop dropped. To export a fraction, give the services a sampler that
// decides by trace id (OTEL_TRACES_SAMPLER=traceidratio), which every
// service decides alike.
func Continue(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	if carrier.Get("traceparent") != "" {
		if sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(ctx, carrier)); sc.IsValid() {
			return trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	var tid trace.TraceID
	var sid trace.SpanID
	binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
	binary.BigEndian.PutUint64(tid[8:], rand.Uint64()|1) // never all zero
	binary.BigEndian.PutUint64(sid[:], rand.Uint64()|1)
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
}

// NewTrace returns ctx carrying a new trace, marked sampled as Continue's
// are, unless ctx already carries a span: for an edge that does not trust
// its callers' trace context (a public endpoint).
func NewTrace(ctx context.Context) context.Context { return Continue(ctx, noCarrier) }

// noCarrier carries no trace context, and costs no allocation a call.
var noCarrier propagation.MapCarrier

// Header returns the W3C traceparent and tracestate values that carry
// ctx's trace context to a callee, or two empty strings when ctx has none.
func Header(ctx context.Context) (traceparent, tracestate string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	var h header
	propagation.TraceContext{}.Inject(ctx, &h)
	return h.parent, h.state
}

// StreamServerInterceptor carries the caller's W3C trace context into the
// stream's context (or starts a trace), without recording spans; kit/server
// does the same for unary calls with Incoming.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &stream{ServerStream: ss, ctx: Incoming(ss.Context())})
	}
}

// NewTraceStreamServerInterceptor starts a new trace for each stream
// (NewTrace), whatever trace context the caller sent, without recording
// spans: kit/server's PublicEndpoint.
func NewTraceStreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &stream{ServerStream: ss, ctx: NewTrace(ss.Context())})
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }
