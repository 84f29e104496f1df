package metrics_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/kit/metrics"
)

// A server counts its calls through m.Server's interceptors (kit/server
// chains them for you; with plain grpc-go, pass them to
// grpc.ChainUnaryInterceptor), and m.Handler serves what they counted on
// /metrics, under grpcprom's names and labels.
func Example() {
	m := metrics.New()
	count := m.Server.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/duet.user.v1.UserService/GetUser"}
	notFound := func(context.Context, any) (any, error) { return nil, status.Error(codes.NotFound, "no such user") }
	for range 2 {
		_, _ = count(context.Background(), nil, info, notFound)
	}

	scrape := httptest.NewRecorder()
	m.Handler().ServeHTTP(scrape, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.SplitSeq(scrape.Body.String(), "\n") {
		if strings.HasPrefix(line, "grpc_server_handled_total") {
			fmt.Println(line)
		}
	}
	// Output:
	// grpc_server_handled_total{grpc_code="NotFound",grpc_method="GetUser",grpc_service="duet.user.v1.UserService",grpc_type="unary"} 2
}
