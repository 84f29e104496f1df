package client_test

import (
	"context"
	"fmt"
	"net"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/server"
)

type exampleUsers struct {
	userv1.UnimplementedUserServiceServer
}

func (exampleUsers) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	// The request id set by the caller arrives with the call.
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId(), Name: requestid.FromContext(ctx)}}, nil
}

// One connection per peer, shared by every caller in the process: it
// balances, retries idempotent methods and forwards the request id.
func ExampleNew() {
	srv, _ := server.New(server.Config{Name: "user"})
	userv1.RegisterUserServiceServer(srv, exampleUsers{})
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	defer srv.Shutdown(context.Background())

	conn, err := client.New(lis.Addr().String(), client.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()

	ctx := requestid.NewContext(context.Background(), "req-42")
	resp, err := userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetUser().GetName())
	// Output: req-42
}

// ExampleStaticAddresses: a static:/// target lists a peer's replicas;
// New refuses a list StaticAddresses does not take.
func ExampleStaticAddresses() {
	addrs, err := client.StaticAddresses("10.0.0.7:9091, 10.0.0.8:9091")
	fmt.Println(addrs, err)
	_, err = client.New("static:///10.0.0.7:9091,10.0.0.8", client.Config{})
	fmt.Println(err)
	// Output:
	// [10.0.0.7:9091 10.0.0.8:9091] <nil>
	// client: static:///10.0.0.7:9091,10.0.0.8: static target address "10.0.0.8": want host:port, with the port's number
}
