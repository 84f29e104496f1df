package tracing_test

import (
	"context"
	"testing"

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
	if got := <-u.seen; !got.IsValid() || got.TraceID() == tid {
		t.Errorf("a call without trace context got %v, want a new valid trace", got.TraceID())
	}
}
