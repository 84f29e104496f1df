package server

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
)

// TestLastWord: a health Watch ends at Shutdown only once its client has
// been sent a status other than SERVING, whichever of Shutdown and the
// Watch's sends comes first.
func TestLastWord(t *testing.T) {
	status := func(s healthpb.HealthCheckResponse_ServingStatus) *healthpb.HealthCheckResponse {
		return &healthpb.HealthCheckResponse{Status: s}
	}
	serving, notServing := status(healthpb.HealthCheckResponse_SERVING), status(healthpb.HealthCheckResponse_NOT_SERVING)
	tests := []struct {
		name string
		// before are sent before Shutdown starts, after after it.
		before, after []*healthpb.HealthCheckResponse
		// endsAt is how many of after have been sent when the stream
		// ends (0: at once).
		endsAt int
	}{
		{name: "told NOT_SERVING already", before: []*healthpb.HealthCheckResponse{serving, notServing}, endsAt: 0},
		{name: "serving, then told", before: []*healthpb.HealthCheckResponse{serving}, after: []*healthpb.HealthCheckResponse{notServing}, endsAt: 1},
		// The first SERVING was still being sent when Shutdown started.
		{name: "nothing sent yet", after: []*healthpb.HealthCheckResponse{serving, notServing}, endsAt: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ended atomic.Int32
			l := newLastWord(func() { ended.Add(1) }, time.Hour)
			for _, m := range tt.before {
				l.sent(m)
			}
			l.drain()
			sent := 0
			for ended.Load() == 0 && sent < len(tt.after) {
				l.sent(tt.after[sent])
				sent++
			}
			if ended.Load() == 0 || sent != tt.endsAt {
				t.Errorf("ended %d times after %d sends following Shutdown, want once after %d", ended.Load(), sent, tt.endsAt)
			}
		})
	}
}

// stuckUsers' GetUser ignores its context: it returns only once block is
// closed.
type stuckUsers struct {
	userv1.UnimplementedUserServiceServer
	started chan<- struct{}
	block   <-chan struct{}
}

func (u stuckUsers) GetUser(context.Context, *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	u.started <- struct{}{}
	<-u.block
	return &userv1.GetUserResponse{}, nil
}

// TestShutdownOutlivedByHandler: a handler that ignores its context does
// not hold Shutdown for ever once the drain timeout has passed and the
// connections are cut; grpc-go's GracefulStop, which Shutdown waited for,
// waits for every handler.
func TestShutdownOutlivedByHandler(t *testing.T) {
	defer func(d time.Duration) { stopWait = d }(stopWait)
	stopWait = 50 * time.Millisecond

	srv, err := New(Config{DrainTimeout: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	started, block := make(chan struct{}, 1), make(chan struct{})
	userv1.RegisterUserServiceServer(srv, stuckUsers{started: started, block: block})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served, conn := serveAndDial(t, srv, lis)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	called := make(chan error, 1)
	go func() {
		_, err := userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
		called <- err
	}()
	<-started
	shut := make(chan struct{})
	go func() {
		srv.Shutdown(ctx)
		close(shut)
	}()
	select {
	case <-shut:
	case <-ctx.Done():
		t.Error("Shutdown still waiting for a handler that ignores its context")
	}
	close(block)
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := <-called; err == nil {
		t.Error("call cut off by Shutdown succeeded")
	}
	<-shut
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestConnectionsRecycled: by default the server asks a client to replace
// its connection after a while, so the client resolves the name again and
// reaches replicas added since; the client's calls carry on meanwhile.
func TestConnectionsRecycled(t *testing.T) {
	defer func(d time.Duration) { maxConnectionAge = d }(maxConnectionAge)
	maxConnectionAge = 100 * time.Millisecond

	srv, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &countingListener{Listener: inner}
	served, conn := serveAndDial(t, srv, lis)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	health := healthpb.NewHealthClient(conn)
	for lis.accepted.Load() < 2 {
		if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call after %d connections: %v", lis.accepted.Load(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Shutdown(ctx)
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// serveAndDial serves srv on lis and returns what Serve returns, once it
// does, and a plaintext client connection to lis, closed when the test
// ends.
func serveAndDial(t *testing.T, srv *Server, lis net.Listener) (<-chan error, *grpc.ClientConn) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return served, conn
}
