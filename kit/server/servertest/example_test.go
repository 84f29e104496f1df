package servertest_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/grpc"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

// greeter is the service under test.
type greeter struct {
	userv1.UnimplementedUserServiceServer
}

func (greeter) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId(), Name: "Ann"}}, nil
}

// In a test, t is the test's *testing.T. An example has none, so this one
// stands in for it: it keeps the cleanups and runs them, last first, when
// the "test" ends.
type exampleT struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
}

func (*exampleT) Helper()                        {}
func (t *exampleT) Cleanup(f func())             { t.cleanups = append(t.cleanups, f) }
func (*exampleT) Errorf(format string, a ...any) { fmt.Printf("error: "+format+"\n", a...) }
func (*exampleT) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
func (t *exampleT) end() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// A component test serves the real handler behind the kit server and calls
// it over real gRPC with the kit client. A service the test opened first
// and closes in a cleanup registered before Start is closed only after the
// server has drained.
func ExampleStart() {
	t := &exampleT{}
	defer t.end()

	t.Cleanup(func() { fmt.Println("service closed after the server drained") })
	conn := servertest.Start(t, server.Config{Name: "user", Logger: slog.New(slog.DiscardHandler)}, func(r grpc.ServiceRegistrar) {
		userv1.RegisterUserServiceServer(r, greeter{})
	})

	resp, err := userv1.NewUserServiceClient(conn).GetUser(context.Background(), &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	fmt.Println(resp.GetUser().GetName())
	// Output:
	// Ann
	// service closed after the server drained
}
