package server_test

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/server"
)

type exampleUsers struct {
	userv1.UnimplementedUserServiceServer
}

func (exampleUsers) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	return nil, apierr.NotFound("USER_NOT_FOUND", "user", req.GetId())
}

// A server with every default on: register services on it as on a
// *grpc.Server, Serve, and Shutdown to drain.
func ExampleNew() {
	srv, err := server.New(server.Config{Name: "user"})
	if err != nil {
		fmt.Println(err)
		return
	}
	userv1.RegisterUserServiceServer(srv, exampleUsers{})
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	defer srv.Shutdown(context.Background())

	conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	ctx := context.Background()

	// Health is served and follows the server's state.
	h, _ := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "duet.user.v1.UserService"})
	fmt.Println(h.GetStatus())

	// Requests are validated against the contract before the handler runs.
	_, err = userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: "42"})
	fmt.Println(apierr.Code(err), apierr.FieldViolations(err)[0].Field)

	// Handler errors keep their stable reason.
	_, err = userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
	fmt.Println(apierr.Reason(err))
	// Output:
	// SERVING
	// InvalidArgument id
	// USER_NOT_FOUND
}

// Shutdown ends at once the streams that would never end by themselves,
// here a health watch, after telling it NOT_SERVING: the client watches
// again elsewhere instead of holding the drain up.
func ExampleServer_Shutdown() {
	srv, err := server.New(server.Config{Name: "user"})
	if err != nil {
		fmt.Println(err)
		return
	}
	userv1.RegisterUserServiceServer(srv, exampleUsers{})
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)

	conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	ctx := context.Background()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "duet.user.v1.UserService"})
	if err != nil {
		fmt.Println(err)
		return
	}
	first, _ := watch.Recv()
	fmt.Println(first.GetStatus())

	srv.Shutdown(ctx)
	last, _ := watch.Recv()
	fmt.Println(last.GetStatus())
	_, err = watch.Recv()
	fmt.Println(apierr.Code(err), apierr.Reason(err))
	// Output:
	// SERVING
	// NOT_SERVING
	// Unavailable SHUTTING_DOWN
}
