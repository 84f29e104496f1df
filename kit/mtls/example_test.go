package mtls_test

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/duetkit/duet/kit/mtls"
)

// A process loads its files once and uses them both ways: its server asks
// callers for a certificate the CA signed, its connections present the
// same certificate. (testdata holds an example CA and a certificate for
// 127.0.0.1 and localhost; mtlstest makes throwaway ones in tests.)
func Example() {
	ctx := context.Background()
	creds, err := mtls.Load(ctx, mtls.Config{
		CertFile: "testdata/cert.pem", KeyFile: "testdata/key.pem", CAFile: "testdata/ca.pem",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer creds.Close()

	srv := grpc.NewServer(grpc.Creds(creds.Server())) // kit/server: Config{Creds: creds.Server()}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(lis)
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds.Client())) // kit/client: Config{Creds: creds.Client()}
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}
