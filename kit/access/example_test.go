package access_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/duetkit/duet/kit/access"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/server"
)

// A policy lets the certificate named "localhost" (kit/mtls's example
// certificate) make EmptyCall and nothing else; the kit's server runs it
// as its Authorizer.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "access")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "policy.json")
	err = os.WriteFile(file, []byte(`{
	  "name": "example",
	  "allow_rules": [{"name": "local", "source": {"principals": ["localhost"]},
	                   "request": {"paths": ["/grpc.testing.TestService/EmptyCall"]}}]
	}`), 0o600)
	if err != nil {
		fmt.Println(err)
		return
	}
	policy, err := access.Load(ctx, access.Config{PolicyFile: file})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer policy.Close()
	creds, err := mtls.Load(ctx, mtls.Config{
		CertFile: "../mtls/testdata/cert.pem", KeyFile: "../mtls/testdata/key.pem", CAFile: "../mtls/testdata/ca.pem",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer creds.Close()

	srv, err := server.New(server.Config{Name: "example", Creds: creds.Server(), Authorizer: policy, DisableAccessLog: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	testpb.RegisterTestServiceServer(srv, testService{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(lis)
	defer srv.Shutdown(ctx)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds.Client()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	_, err = client.EmptyCall(ctx, &testpb.Empty{})
	fmt.Println("EmptyCall:", status.Code(err))
	_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{})
	fmt.Println("UnaryCall:", status.Code(err), apierr.Reason(err))
	// Output:
	// EmptyCall: OK
	// UnaryCall: PermissionDenied CALLER_NOT_ALLOWED
}
