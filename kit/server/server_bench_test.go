package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	benchv1 "github.com/duetkit/duet/gen/duet/bench/v1"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/server"
)

// echo answers with the payload it was sent.
type echo struct {
	benchv1.UnimplementedEchoServiceServer
}

func (echo) Echo(_ context.Context, req *benchv1.EchoRequest) (*benchv1.EchoResponse, error) {
	return &benchv1.EchoResponse{Payload: req.GetPayload()}, nil
}

// serveBufconn serves echo on srv over an in-memory listener and returns a
// bare grpc-go client of it, so the only difference between two runs is
// the server's configuration.
func serveBufconn(b *testing.B, srv interface {
	grpc.ServiceRegistrar
	Serve(net.Listener) error
}, stop func()) benchv1.EchoServiceClient {
	b.Helper()
	lis := bufconn.Listen(1 << 20)
	benchv1.RegisterEchoServiceServer(srv, echo{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		stop()
		<-served
	})
	return benchv1.NewEchoServiceClient(conn)
}

// withTracing installs what kit/tracing.Setup installs (a W3C propagator
// and an SDK tracer provider, no exporter), as `duet up` runs, and restores
// the previous globals when the benchmark ends.
func withTracing(b *testing.B) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	tp := sdktrace.NewTracerProvider()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	})
}

// BenchmarkUnaryChain compares one unary call through kit/server's default
// chain (trace context, request id, access log, metrics, recovery, default
// deadline, protovalidate) with bare grpc-go, over an in-memory connection
// with a bare client. The kit-no* variants switch one default off each to
// show what it costs; kit-noworkers runs every call on a goroutine of its
// own instead of the kit's stream workers (Config.StreamWorkers). The
// -token cases send an end user's token with every call: bare-token
// shows what grpc-go spends carrying it, kit-authn the kit checking it
// as well (kit/authn). Run with -benchmem: allocations are most of the
// difference.
//
//	go test -run '^$' -bench UnaryChain -benchmem ./kit/server
func BenchmarkUnaryChain(b *testing.B) {
	payload := bytes.Repeat([]byte{'d'}, 100)
	req := &benchv1.EchoRequest{Payload: payload}
	verifier, token := benchVerifier(b)
	// The access log writes JSON lines as in production, to nowhere.
	log := logger.New(io.Discard, slog.LevelInfo, "echo")
	kit := func(mod func(*server.Config)) func(b *testing.B) benchv1.EchoServiceClient {
		return func(b *testing.B) benchv1.EchoServiceClient {
			withTracing(b)
			cfg := server.Config{Name: "echo", Logger: log}
			if mod != nil {
				mod(&cfg)
			}
			srv, err := server.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			return serveBufconn(b, srv, func() { srv.Shutdown(context.Background()) })
		}
	}
	bare := func(b *testing.B) benchv1.EchoServiceClient {
		srv := grpc.NewServer()
		return serveBufconn(b, srv, srv.Stop)
	}
	cases := []struct {
		name  string
		start func(b *testing.B) benchv1.EchoServiceClient
		token bool
	}{
		{"bare", bare, false},
		{"bare-token", bare, true},
		{"kit", kit(nil), false},
		{"kit-authn", kit(func(c *server.Config) { c.Authenticator = verifier }), true},
		{"kit-noaccesslog", kit(func(c *server.Config) { c.DisableAccessLog = true }), false},
		{"kit-notracing", kit(func(c *server.Config) { c.DisableTracing = true }), false},
		{"kit-novalidation", kit(func(c *server.Config) { c.DisableValidation = true }), false},
		{"kit-noworkers", kit(func(c *server.Config) { c.StreamWorkers = -1 }), false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			client := c.start(b)
			ctx := context.Background()
			call := func() (*benchv1.EchoResponse, error) { return client.Echo(ctx, req) }
			if c.token {
				// As each call of the gateway's carries its caller's.
				authorization := "Bearer " + token
				call = func() (*benchv1.EchoResponse, error) {
					return client.Echo(metadata.AppendToOutgoingContext(ctx, "authorization", authorization), req)
				}
			}
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := call(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(32) // 32 x GOMAXPROCS callers, like bench's C=64 on two cores
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := call(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// benchVerifier is a kit/authn Verifier of a key made for the benchmark,
// and a token it accepts.
func benchVerifier(b *testing.B) (*authn.Verifier, string) {
	b.Helper()
	issuer, err := devissuer.New("https://bench.duet.invalid", "bench")
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(b.TempDir(), "keys.json")
	if err := issuer.WriteKeySet(file); err != nil {
		b.Fatal(err)
	}
	v, err := authn.Load(context.Background(), authn.Config{KeysFile: file, Issuer: issuer.Name, Audience: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	token, err := issuer.Sign(devissuer.Claims{Subject: "bench-user", Audience: []string{"bench"}})
	if err != nil {
		b.Fatal(err)
	}
	return v, token
}
