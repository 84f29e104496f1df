package client

import (
	"context"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/duetkit/duet/kit/requestid"
)

func TestPropagationOutgoing(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
		TraceFlags: trace.FlagsSampled,
	})
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	withID := func(ctx context.Context) context.Context { return requestid.NewContext(ctx, "req-1") }
	withSpan := func(ctx context.Context) context.Context { return trace.ContextWithSpanContext(ctx, sc) }
	tests := []struct {
		name  string
		trace bool
		ctx   func(context.Context) context.Context
		want  metadata.MD // x-request-id "<new>": any new valid id
	}{
		{"a new request id when the context has none", true, func(ctx context.Context) context.Context { return ctx },
			metadata.MD{"x-request-id": {"<new>"}}},
		{"request id", true, withID, metadata.MD{"x-request-id": {"req-1"}}},
		{"trace context, and a new request id", true, withSpan, metadata.MD{"x-request-id": {"<new>"}, "traceparent": {parent}}},
		{"both", true, func(ctx context.Context) context.Context { return withSpan(withID(ctx)) },
			metadata.MD{"x-request-id": {"req-1"}, "traceparent": {parent}}},
		{"trace context off", false, func(ctx context.Context) context.Context { return withSpan(withID(ctx)) },
			metadata.MD{"x-request-id": {"req-1"}}},
		{"caller's own headers kept, not doubled", true, func(ctx context.Context) context.Context {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", "mine", "traceparent", "00-11111111111111111111111111111111-2222222222222222-00", "other", "v")
			return withSpan(withID(ctx))
		}, metadata.MD{"x-request-id": {"mine"}, "traceparent": {"00-11111111111111111111111111111111-2222222222222222-00"}, "other": {"v"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := propagation{trace: tt.trace}.outgoing(tt.ctx(context.Background()))
			got, _ := metadata.FromOutgoingContext(ctx)
			if slices.Equal(tt.want["x-request-id"], []string{"<new>"}) {
				if ids := got["x-request-id"]; len(ids) != 1 || !requestid.Valid(ids[0]) {
					t.Fatalf("x-request-id = %q, want one new valid id", ids)
				}
				got["x-request-id"] = []string{"<new>"}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("outgoing metadata = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if !slices.Equal(got[k], v) {
					t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}
