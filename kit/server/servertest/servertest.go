// Package servertest runs a kit/server for one test on a loopback port and
// connects to it with kit/client, as net/http/httptest does for HTTP
// handlers. Component tests then exercise a service over real gRPC with the
// production interceptor chain on both sides, and need no listener, serve
// goroutine or shutdown code of their own.
//
// Everything Start and NewServer set up is torn down when the test ends,
// connection first, then the server's drain. Cleanups run last in, first
// out, so a service the test opened before starting the server and closes
// in a cleanup registered then is closed only after the server has drained:
//
//	svc := open(t)
//	t.Cleanup(func() { _ = svc.Close() }) // runs after the server's cleanup
//	conn := servertest.Start(t, server.Config{Name: "user"}, svc.Register)
package servertest

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/server"
)

// Start serves a kit server built from cfg on a free loopback port, with
// register adding the services, and returns a kit/client connection to it.
// When the test ends the connection closes, the server drains (Shutdown)
// and an error from Serve fails the test.
func Start(t testing.TB, cfg server.Config, register func(grpc.ServiceRegistrar)) *grpc.ClientConn {
	t.Helper()
	return NewServer(t, cfg, register).Conn
}

// Server is a kit server serving for the length of one test.
type Server struct {
	// Server is the kit server itself, for its Health service or a
	// Shutdown the test wants to watch.
	*server.Server
	// Addr is the host:port the server listens on.
	Addr string
	// Conn is a kit/client connection to Addr with the default client.Config.
	Conn *grpc.ClientConn

	t      testing.TB
	served chan error // Serve's result
	once   sync.Once
}

// NewServer is Start for tests that need more than the connection: the
// address, the kit server, a client configured otherwise (Dial) or a Close
// before the test ends.
func NewServer(t testing.TB, cfg server.Config, register func(grpc.ServiceRegistrar)) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("servertest: listen: %v", err)
	}
	return Serve(t, lis, cfg, register)
}

// Serve is NewServer on the caller's listener, which it takes over. Tests
// use it to bring a peer back on the address of a Server they closed, the
// way a restarted process would come back.
func Serve(t testing.TB, lis net.Listener, cfg server.Config, register func(grpc.ServiceRegistrar)) *Server {
	t.Helper()
	srv, err := server.New(cfg)
	if err != nil {
		_ = lis.Close()
		t.Fatalf("servertest: %v", err)
	}
	register(srv)
	s := &Server{Server: srv, Addr: lis.Addr().String(), t: t, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(lis) }()
	// Registered before the dial, so a failed dial still stops the server.
	t.Cleanup(s.Close)
	if s.Conn, err = client.New(s.Addr, client.Config{}); err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return s
}

// Dial returns another kit/client connection to the server, made with cfg:
// with retries off, say, so that the test sees every status as the server
// sent it. The connection closes when t ends; Close leaves it open, so that
// it can reach a server started again on Addr.
func (s *Server) Dial(t testing.TB, cfg client.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := client.New(s.Addr, cfg)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Close closes Conn, drains the server with Shutdown (bounded by the
// Config's DrainTimeout) and fails the test if Serve returned an error. It
// runs when the test ends; a test calls it earlier to take the server off
// the network, after which Addr is free to listen on again. Later calls do
// nothing.
//
// Conn closes first so that streams the test left open end and do not hold
// up the drain.
func (s *Server) Close() {
	s.once.Do(func() {
		if s.Conn != nil {
			_ = s.Conn.Close()
		}
		// The test's context is already cancelled when cleanups run; the
		// drain timeout bounds the wait instead.
		s.Server.Shutdown(context.Background())
		if err := <-s.served; err != nil {
			s.t.Errorf("servertest: Serve: %v", err)
		}
	})
}
