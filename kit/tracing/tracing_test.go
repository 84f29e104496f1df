package tracing_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/tracing"
)

type users struct {
	userv1.UnimplementedUserServiceServer
	seen chan trace.SpanContext
}

func (u users) GetUser(ctx context.Context, _ *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	u.seen <- trace.SpanContextFromContext(ctx)
	return &userv1.GetUserResponse{}, nil
}

// Without an exporter no span is recorded, but the trace context crosses
// each hop, and a call that brings none starts a trace of its own.
func TestTraceContextCrossesHopsWithoutAnExporter(t *testing.T) {
	if tracing.Exporting() {
		t.Skip("an exporter is configured")
	}
	u := users{seen: make(chan trace.SpanContext, 1)}
	conn := servertest.Start(t, server.Config{}, func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, u) })
	client := userv1.NewUserServiceClient(conn)
	req := &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"}

	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	if _, err := client.GetUser(trace.ContextWithSpanContext(t.Context(), parent), req); err != nil {
		t.Fatal(err)
	}
	if got := <-u.seen; got.TraceID() != tid || !got.IsRemote() {
		t.Errorf("server saw trace %v (remote %v), want %v", got.TraceID(), got.IsRemote(), tid)
	}

	if _, err := client.GetUser(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if got := <-u.seen; !got.IsValid() || got.TraceID() == tid || !got.IsSampled() {
		t.Errorf("a call without trace context got %v (sampled %v), want a new valid trace, sampled", got.TraceID(), got.IsSampled())
	}
}

// A trace started by a process that records nothing is recorded by an
// exporting service behind it under the SDK's default (parent-based)
// sampler, as it would be had it started there. Marked unsampled, every
// span of every hop behind was dropped.
func TestNewTraceIsRecordedBehind(t *testing.T) {
	ctx := tracing.Continue(t.Context(), propagation.MapCarrier{})
	parent, _ := tracing.Header(ctx)
	if parent == "" {
		t.Fatal("no traceparent for a new trace")
	}
	remote := propagation.TraceContext{}.Extract(t.Context(), propagation.MapCarrier{"traceparent": parent})
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	_, span := tp.Tracer("behind").Start(remote, "call")
	defer span.End()
	if !span.IsRecording() || span.SpanContext().TraceID() != trace.SpanContextFromContext(ctx).TraceID() {
		t.Errorf("behind traceparent %s: span recording %v in trace %v, want recorded in the same trace",
			parent, span.IsRecording(), span.SpanContext().TraceID())
	}
}
