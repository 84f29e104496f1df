package tracing_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

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

// TestPublicEndpoint: a server with server.Config.PublicEndpoint starts a
// trace of its own for every call and stream, whatever trace context the
// caller sent, with spans recorded (linked to the caller's trace) or not;
// without it the caller's trace goes on.
func TestPublicEndpoint(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	for _, exporting := range []bool{false, true} {
		for _, public := range []bool{false, true} {
			t.Run(fmt.Sprintf("exporting=%v/public=%v", exporting, public), func(t *testing.T) {
				var rec *tracetest.SpanRecorder
				if exporting {
					rec = tracetest.NewSpanRecorder()
					tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
					restore := tracing.Install(tp)
					t.Cleanup(func() {
						restore()
						_ = tp.Shutdown(context.Background())
					})
				} else if tracing.Exporting() {
					t.Skip("an exporter is configured")
				}
				u := users{seen: make(chan trace.SpanContext, 1)}
				streamSeen := make(chan trace.SpanContext, 1)
				cfg := server.Config{PublicEndpoint: public, StreamInterceptors: []grpc.StreamServerInterceptor{
					func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
						// Only the test's own stream, not the client's
						// health checking.
						if len(metadata.ValueFromIncomingContext(ss.Context(), "x-probe")) > 0 {
							streamSeen <- trace.SpanContextFromContext(ss.Context())
						}
						return h(srv, ss)
					},
				}}
				conn := servertest.Start(t, cfg, func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, u) })
				ctx := metadata.AppendToOutgoingContext(trace.ContextWithSpanContext(t.Context(), parent), "x-probe", "1")

				if _, err := userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"}); err != nil {
					t.Fatal(err)
				}
				watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := watch.Recv(); err != nil {
					t.Fatal(err)
				}
				for kind, got := range map[string]trace.SpanContext{"call": seen(t, u.seen), "stream": seen(t, streamSeen)} {
					if !got.IsValid() || (got.TraceID() == tid) == public {
						t.Errorf("%s in trace %v, want the caller's %v", kind, got.TraceID(), !public)
					}
				}
				if !exporting || !public {
					return
				}
				// The server's span links to the caller's trace.
				deadline := time.Now().Add(10 * time.Second)
				for {
					for _, s := range rec.Ended() {
						if s.SpanKind() == trace.SpanKindServer && strings.HasSuffix(s.Name(), "GetUser") {
							if len(s.Links()) != 1 || s.Links()[0].SpanContext.TraceID() != tid {
								t.Errorf("server span's links %v, want one to the caller's trace", s.Links())
							}
							return
						}
					}
					if time.Now().After(deadline) {
						t.Fatal("no server span ended")
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
	}
}

// seen returns the span context a handler or interceptor sent on ch, or
// fails the test when none comes.
func seen(t *testing.T, ch <-chan trace.SpanContext) trace.SpanContext {
	t.Helper()
	select {
	case sc := <-ch:
		return sc
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no call or stream within 10 s")
		return trace.SpanContext{}
	}
}
