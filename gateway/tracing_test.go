package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/tracing"
)

// TestTraceContextAtTheEdge: what of a caller's W3C trace context reaches
// the services. By default the gateway is a public endpoint: the services
// see a trace of the gateway's own and none of the caller's baggage;
// with TrustTraceContext, the caller's trace and baggage go on.
func TestTraceContextAtTheEdge(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	restore := tracing.Install(tp)
	t.Cleanup(func() {
		restore()
		_ = tp.Shutdown(context.Background())
	})
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, trust := range []bool{false, true} {
		t.Run(map[bool]string{false: "public", true: "trusted"}[trust], func(t *testing.T) {
			calls := &calls{}
			users := startBackend(t, userv1.UserService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
				userv1.RegisterUserServiceServer(r, &fakeUsers{calls: calls})
			})
			// A connection that propagates trace context, as kit/client's
			// does when tracing.
			conn, err := grpc.NewClient(users.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithStatsHandler(otelgrpc.NewClientHandler()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			e := newEnv(t, func(c *Config) { c.Users, c.TrustTraceContext = conn, trust })
			resp := e.do(t, "GET", "/v1/users/"+knownUserID, nil,
				"traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01", "baggage", "tenant=acme")
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			md := calls.lastMD(t)
			parent, baggage := strings.Join(md.Get("traceparent"), ","), strings.Join(md.Get("baggage"), ",")
			if parent == "" {
				t.Fatal("no traceparent reached the service")
			}
			if continued := strings.Contains(parent, callerTrace); continued != trust {
				t.Errorf("traceparent %q at the service: the caller's trace went on %v, want %v", parent, continued, trust)
			}
			if carried := strings.Contains(baggage, "tenant=acme"); carried != trust {
				t.Errorf("baggage %q at the service: the caller's went on %v, want %v", baggage, carried, trust)
			}
		})
	}
}

// TestTraceContextAtTheEdgeWithoutExporter: a gateway that records no
// spans is a public endpoint all the same. It used to continue every
// caller's traceparent when it did not export, sampled flag and all, so
// a client chose the trace ids the services log under and had exporting
// services behind it record every call.
func TestTraceContextAtTheEdgeWithoutExporter(t *testing.T) {
	if tracing.Exporting() {
		t.Skip("an exporter is configured")
	}
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, trust := range []bool{false, true} {
		t.Run(map[bool]string{false: "public", true: "trusted"}[trust], func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.TrustTraceContext = trust })
			resp := e.do(t, "GET", "/v1/users/"+knownUserID, nil,
				"traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			var traceID any
			for _, rec := range e.logs.Lines(t) {
				if rec["msg"] == "http request" {
					traceID = rec["trace_id"]
				}
			}
			if id, _ := traceID.(string); len(id) != 32 || (id == callerTrace) != trust {
				t.Errorf("access log's trace_id %v: want the caller's %v", traceID, trust)
			}
		})
	}
}
