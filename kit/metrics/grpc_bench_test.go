package metrics

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// BenchmarkUnaryInterceptors measures what the metrics interceptors add to
// one successful unary call, on the server and on the client side, by
// calling them directly with a handler and an invoker that do nothing.
func BenchmarkUnaryInterceptors(b *testing.B) {
	for _, impl := range []struct {
		name string
		set  func(*prometheus.Registry) interceptorSet
	}{
		{"grpcprom", grpcpromSet},
		{"own", ownSet},
	} {
		set := impl.set(prometheus.NewRegistry())
		ctx := context.Background()
		req, reply := wrapperspb.String("hi"), new(wrapperspb.StringValue)
		info := &grpc.UnaryServerInfo{FullMethod: "/duet.bench.v1.EchoService/Echo"}
		handler := func(context.Context, any) (any, error) { return reply, nil }
		invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
		server := func() {
			if _, err := set.unaryServer(ctx, req, info, handler); err != nil {
				b.Fatal(err)
			}
		}
		client := func() {
			if err := set.unaryClient(ctx, info.FullMethod, req, reply, nil, invoker); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(impl.name+"/server", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				server()
			}
		})
		b.Run(impl.name+"/client", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				client()
			}
		})
		b.Run(impl.name+"/both", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				server()
				client()
			}
		})
		b.Run(impl.name+"/both-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					server()
					client()
				}
			})
		})
	}
}
