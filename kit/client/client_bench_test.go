package client_test

import (
	"bytes"
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	benchv1 "github.com/duetkit/duet/gen/duet/bench/v1"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/requestid"
)

// echo answers with the payload it was sent.
type echo struct {
	benchv1.UnimplementedEchoServiceServer
}

func (echo) Echo(_ context.Context, req *benchv1.EchoRequest) (*benchv1.EchoResponse, error) {
	return &benchv1.EchoResponse{Payload: req.GetPayload()}, nil
}

// BenchmarkUnaryClient compares one unary call made through a kit/client
// connection (request-id propagation, client metrics, the OpenTelemetry
// stats handler with an SDK tracer provider as `duet up` installs, the
// service config's timeout and retry policy: Echo is NO_SIDE_EFFECTS) with
// a bare grpc-go connection, against the same bare server over an in-memory
// connection. kit-noretry and kit-notracing switch one default off each;
// kit-unsampled keeps the stats handler with a never-sample tracer provider.
//
//	go test -run '^$' -bench UnaryClient -benchmem ./kit/client
func BenchmarkUnaryClient(b *testing.B) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	benchv1.RegisterEchoServiceServer(srv, echo{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	b.Cleanup(func() {
		srv.Stop()
		<-served
	})
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	tp := sdktrace.NewTracerProvider()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	})

	dialer := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })
	const target = "passthrough:///bufconn"
	kit := func(cfg client.Config) func() (*grpc.ClientConn, error) {
		return func() (*grpc.ClientConn, error) {
			cfg.Options = append(cfg.Options, dialer)
			return client.New(target, cfg)
		}
	}
	cases := []struct {
		name string
		dial func() (*grpc.ClientConn, error)
	}{
		{"bare", func() (*grpc.ClientConn, error) {
			return grpc.NewClient(target, dialer, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}},
		{"kit", kit(client.Config{})},
		{"kit-noretry", kit(client.Config{DisableRetries: true})},
		{"kit-notracing", kit(client.Config{DisableTracing: true})},
		// Tracing kept, spans not recorded: trace ids still propagate.
		{"kit-unsampled", kit(client.Config{DisableTracing: true, Options: []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample()))))))}})},
	}
	payload := bytes.Repeat([]byte{'d'}, 100)
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			conn, err := c.dial()
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			echo := benchv1.NewEchoServiceClient(conn)
			// A request id in the context, as in any call a service makes
			// while handling one.
			ctx := requestid.NewContext(context.Background(), "bench-request-1")
			req := &benchv1.EchoRequest{Payload: payload}
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := echo.Echo(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(32)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := echo.Echo(ctx, req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
