package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

// named answers GetUser with its own name, so a test sees which replica
// took a call.
type named struct {
	userv1.UnimplementedUserServiceServer
	name string
}

func (n named) GetUser(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId(), Name: n.name}}, nil
}

// replicas serves two named replicas, "a" and "b", and returns them with
// a kit/client connection made with cfg to both at once, the way a
// resolver that returns several addresses (dns:/// of a headless service,
// say) would give them.
func replicas(t *testing.T, cfg client.Config) (a, b *servertest.Server, users userv1.UserServiceClient) {
	t.Helper()
	a = servertest.NewServer(t, server.Config{}, func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, named{name: "a"}) })
	b = servertest.NewServer(t, server.Config{}, func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, named{name: "b"}) })
	r := manual.NewBuilderWithScheme("replicas")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: a.Addr}, {Addr: b.Addr}}})
	cfg.Options = append(cfg.Options, grpc.WithResolvers(r))
	conn, err := client.New(r.Scheme()+":///users", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return a, b, userv1.NewUserServiceClient(conn)
}

// within calls GetUser until seen says the answers so far are enough, and
// fails the test if they are not within five seconds.
func within(t *testing.T, users userv1.UserServiceClient, what string, seen func(name string, err error) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		resp, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
		if ctx.Err() != nil {
			break
		}
		if seen(resp.GetUser().GetName(), err) {
			return
		}
	}
	t.Fatalf("not within 5 s: %s", what)
}

// both waits until calls have reached both replicas.
func both(t *testing.T, users userv1.UserServiceClient) {
	t.Helper()
	got := map[string]bool{}
	within(t, users, "calls reach both replicas", func(name string, err error) bool {
		got[name] = err == nil
		return got["a"] && got["b"]
	})
}

// onlyTo waits until 20 calls in a row have gone to the replica named
// name (the other has said it is NOT_SERVING).
func onlyTo(t *testing.T, users userv1.UserServiceClient, name string) {
	t.Helper()
	run := 0
	within(t, users, "20 calls in a row to "+name, func(got string, err error) bool {
		if err == nil && got == name {
			run++
		} else {
			run = 0
		}
		return run == 20
	})
}

// TestHealthCheckSteersCalls: round_robin sent a replica that reported
// NOT_SERVING (draining, or told by its owner it cannot serve) its share
// of the calls as long as the connection to it stood.
func TestHealthCheckSteersCalls(t *testing.T) {
	tests := []struct {
		name    string
		cfg     client.Config
		steered bool // calls stay off a NOT_SERVING replica
	}{
		{"health checked (default)", client.Config{}, true},
		{"DisableHealthCheck", client.Config{DisableHealthCheck: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, users := replicas(t, tt.cfg)
			both(t, users)

			a.SetServing(false)
			if !tt.steered {
				// Both still get calls however long a has said it
				// cannot serve: nothing reads what it says.
				both(t, users)
				both(t, users)
				return
			}
			// The status reaches the client over the Watch stream; wait
			// for it, then every call goes to b.
			onlyTo(t, users, "b")
			for i := 0; i < 50; i++ {
				resp, err := users.GetUser(context.Background(), &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
				if err != nil || resp.GetUser().GetName() != "b" {
					t.Fatalf("call %d with a NOT_SERVING: %v, %v; want b's answer", i, resp.GetUser().GetName(), err)
				}
			}

			// With neither healthy, calls fail at once as UNAVAILABLE,
			// as with neither reachable, rather than wait.
			b.SetServing(false)
			within(t, users, "UNAVAILABLE with neither replica serving", func(_ string, err error) bool {
				return status.Code(err) == codes.Unavailable
			})

			// Back in service, a gets calls again.
			a.SetServing(true)
			b.SetServing(true)
			both(t, users)
		})
	}
}

// TestStaticTarget: a static:/// target balances calls over its list, and
// a list that is not one is refused by New, not by every call.
func TestStaticTarget(t *testing.T) {
	a := servertest.NewServer(t, server.Config{}, func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, named{name: "a"}) })
	b := servertest.NewServer(t, server.Config{}, func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, named{name: "b"}) })
	conn, err := client.New("static:///"+a.Addr+", "+b.Addr, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	users := userv1.NewUserServiceClient(conn)
	both(t, users)
	a.SetServing(false)
	onlyTo(t, users, "b")

	for _, bad := range []string{"static:///", "static:///127.0.0.1", "static:///127.0.0.1:1,127.0.0.1:1", "static:///127.0.0.1:1,:2", "static:///127.0.0.1:99999",
		"static://127.0.0.1:1,127.0.0.1:2", "static:127.0.0.1:1,127.0.0.1", "STATIC:///127.0.0.1", "static:///127.0.0.1:1,,127.0.0.1:2", "static:///10.0.0.7 :9091"} {
		if conn, err := client.New(bad, client.Config{}); err == nil {
			_ = conn.Close()
			t.Errorf("New(%q) took it", bad)
		}
	}
	// One replica twice, spelled two ways.
	for _, twice := range []string{"127.0.0.1:1,127.0.0.1:01", "Localhost:1,localhost:1", "[::1]:1,[0:0::1]:1", "[::ffff:127.0.0.1]:1,127.0.0.1:1"} {
		if _, err := client.StaticAddresses(twice); err == nil || !strings.Contains(err.Error(), "given twice") {
			t.Errorf("StaticAddresses(%q) = %v, want an address given twice", twice, err)
		}
	}
	// Apart, though alike: search domains may complete "host" only.
	if _, err := client.StaticAddresses("host:1,host.:1"); err != nil {
		t.Errorf("StaticAddresses took \"host\" and \"host.\" for one address: %v", err)
	}
}
