package servertest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// OpenTelemetry's process-wide worker is not ours.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// quiet keeps the servers' access logs out of the test output.
var quiet = slog.New(slog.DiscardHandler)

const validID = "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"

// users answers GetUser with the request id it was called with as the name.
type users struct {
	userv1.UnimplementedUserServiceServer
}

func (users) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId(), Name: requestid.FromContext(ctx)}}, nil
}

func register(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, users{}) }

func TestStart(t *testing.T) {
	conn := servertest.Start(t, server.Config{Name: "user", Logger: quiet}, register)
	ctx := t.Context()
	c := userv1.NewUserServiceClient(conn)

	tests := []struct {
		name      string
		id        string
		wantCode  codes.Code
		wantField string
	}{
		// The kit client forwards the request id of the context.
		{name: "served", id: validID, wantCode: codes.OK},
		// The kit server validates requests against the contract.
		{name: "validated", id: "42", wantCode: codes.InvalidArgument, wantField: "id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.GetUser(requestid.NewContext(ctx, "req-1"), &userv1.GetUserRequest{Id: tt.id})
			if got := apierr.Code(err); got != tt.wantCode {
				t.Fatalf("code = %v, want %v (err %v)", got, tt.wantCode, err)
			}
			if tt.wantCode == codes.OK && resp.GetUser().GetName() != "req-1" {
				t.Errorf("handler saw request id %q, want req-1", resp.GetUser().GetName())
			}
			if fv := apierr.FieldViolations(err); tt.wantField != "" && (len(fv) != 1 || fv[0].Field != tt.wantField) {
				t.Errorf("field violations = %v, want one on %s", fv, tt.wantField)
			}
		})
	}
	st, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "duet.user.v1.UserService"})
	if err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", st.GetStatus(), err)
	}
}

// TestCleanupOrder: a cleanup registered before the server starts (a
// service's Close) runs after the connection has closed and the server
// has drained.
func TestCleanupOrder(t *testing.T) {
	var (
		s     *servertest.Server
		state connectivity.State
		drain healthpb.HealthCheckResponse_ServingStatus
		dial  error
	)
	t.Run("inner", func(t *testing.T) {
		t.Cleanup(func() {
			state = s.Conn.GetState()
			resp, err := s.Health().Check(context.Background(), &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Error(err)
			}
			drain = resp.GetStatus()
			c, err := net.Dial("tcp", s.Addr)
			if err == nil {
				_ = c.Close()
			}
			dial = err
		})
		s = servertest.NewServer(t, server.Config{Logger: quiet}, register)
		if _, err := userv1.NewUserServiceClient(s.Conn).GetUser(t.Context(), &userv1.GetUserRequest{Id: validID}); err != nil {
			t.Fatal(err)
		}
	})
	if state != connectivity.Shutdown {
		t.Errorf("connection state in a later cleanup = %v, want Shutdown", state)
	}
	if drain != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health in a later cleanup = %v, want NOT_SERVING", drain)
	}
	if dial == nil {
		t.Error("server still accepts connections in a later cleanup")
	}
}

// TestCloseAndServeAgain: a test can take a server off the network and
// bring it back on the same address, and a Dial connection reaches both.
func TestCloseAndServeAgain(t *testing.T) {
	s := servertest.NewServer(t, server.Config{Logger: quiet}, register)
	// Retries off, so the outage shows; quick reconnects, so the return
	// costs the test little time.
	c := userv1.NewUserServiceClient(s.Dial(t, client.Config{DisableRetries: true, Options: []grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond},
			MinConnectTimeout: 5 * time.Second,
		}),
	}}))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: validID}); err != nil {
		t.Fatal(err)
	}

	s.Close()
	s.Close() // later calls do nothing
	if _, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: validID}); apierr.Code(err) != codes.Unavailable {
		t.Fatalf("call to a closed server = %v, want UNAVAILABLE", err)
	}

	lis, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatalf("listen on %s after Close: %v", s.Addr, err)
	}
	again := servertest.Serve(t, lis, server.Config{Logger: quiet}, register)
	if again.Addr != s.Addr {
		t.Errorf("Addr = %s, want %s", again.Addr, s.Addr)
	}
	if _, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: validID}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("call to the server on the same address: %v", err)
	}
}

// recorder is a testing.TB that records errors instead of failing.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// refusing is a listener whose every Accept fails, so that Serve returns
// an error. Serve closes its listener as it returns; closed tells the test
// that Serve is done, so that a Close made after it cannot turn the error
// into a drain (grpc-go's Serve returns nil once a stop has begun).
type refusing struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *refusing) Accept() (net.Conn, error) {
	return nil, errors.New("accept refused")
}

func (l *refusing) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func TestServeErrorFailsTheTest(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &refusing{Listener: inner, closed: make(chan struct{})}
	r := &recorder{TB: t}
	s := servertest.Serve(r, lis, server.Config{Logger: quiet}, register)
	select {
	case <-lis.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its Accept failed")
	}
	s.Close()
	if len(r.errs) != 1 {
		t.Errorf("errors reported = %q, want the one from Serve", r.errs)
	}
}
