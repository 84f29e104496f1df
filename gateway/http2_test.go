package gateway

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/h2conn"
	"github.com/duetkit/duet/kit/apierr"
)

// heldUserID is the user whose GetUser heldUsers holds until release.
const heldUserID = "00000000-0000-4000-8000-0000000000aa"

// heldUsers answers GetUser at once, except for heldUserID, which it
// answers once release is closed, telling started when that call arrives.
type heldUsers struct {
	userv1.UnimplementedUserServiceServer
	started chan struct{}
	release chan struct{}
}

func (h heldUsers) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	if req.GetId() == heldUserID {
		h.started <- struct{}{}
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
}

// TestShutdownDrainsHTTP2: over HTTP/2 too, a request in
// flight when Shutdown starts is answered. The server closes connections
// that never carried a request (newConns) by what ConnState reports;
// net/http skips the hook when it hands a connection to HTTP/2, whose
// server then reports it active and idle itself, and this test keeps it
// that way, over TLS and without (h2c).
func TestShutdownDrainsHTTP2(t *testing.T) {
	t.Run("TLS", func(t *testing.T) { drainsHTTP2(t, true) })
	t.Run("h2c", func(t *testing.T) { drainsHTTP2(t, false) })
}

func drainsHTTP2(t *testing.T, tls bool) {
	users := heldUsers{started: make(chan struct{}, 1), release: make(chan struct{})}
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = quietGateway(t, users, nil).Server("")
	var client *http.Client
	if tls {
		ts.EnableHTTP2 = true
		ts.StartTLS()
		client = ts.Client()
	} else {
		ts.Start()
		var h2c http.Protocols
		h2c.SetUnencryptedHTTP2(true)
		client = &http.Client{Transport: &http.Transport{Protocols: &h2c}}
	}
	defer ts.Close()
	defer client.CloseIdleConnections()
	hooked := make(chan struct{})
	ts.Config.RegisterOnShutdown(func() { close(hooked) })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	get := func(id string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/users/"+id, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}

	if resp, err := get(knownUserID); err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("GET over HTTP/2: %v, %v", resp, err)
	}

	type result struct {
		resp *http.Response
		err  error
	}
	held := make(chan result, 1)
	go func() {
		resp, err := get(heldUserID)
		held <- result{resp, err}
	}()
	select {
	case <-users.started:
	case <-ctx.Done():
		t.Fatal("the request never reached the backend")
	}
	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.Config.Shutdown(ctx) }()
	select {
	case <-hooked:
	case <-ctx.Done():
		t.Fatal("Shutdown never ran its hooks")
	}
	close(users.release)
	if r := <-held; r.err != nil || r.resp.StatusCode != 200 {
		t.Errorf("request in flight at Shutdown: %v, %v; want 200", r.resp, r.err)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

// TestWatchSilentOverHTTP2: over HTTP/2 a watch may be silent for longer
// than WriteTimeout between two lines. Go's HTTP/2 server resets a stream
// when its write deadline passes whether or not it is writing, so the
// deadline each line gets must be cleared once the line is out.
func TestWatchSilentOverHTTP2(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = quietGateway(t, nil, watchingOrders{pause: 600 * time.Millisecond}, func(c *Config) { c.WriteTimeout = 200 * time.Millisecond }).Server("")
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/orders/"+knownUserID+":watch", nil)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("watch over HTTP/2: HTTP/%d %d", resp.ProtoMajor, resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("watch cut off after %q: %v", body, err)
	}
	if n := strings.Count(string(body), "\n"); n != 3 {
		t.Errorf("watch sent %d lines, want 3: %q", n, body)
	}
}

// TestGRPCOverH2C: without TLS the server speaks HTTP/2 to a client that
// begins with its preface, so a plain gRPC client calls the gateway's
// procedures, its errors' codes and reasons intact; HTTP/1.1 clients are
// served on the same port as before. The server spoke HTTP/1.1 only, on
// which gRPC cannot run.
func TestGRPCOverH2C(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = quietGateway(t, refusingUsers{}, nil).Server("")
	ts.Start()
	defer ts.Close()
	conn, err := grpc.NewClient(ts.Listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	users := userv1.NewUserServiceClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: knownUserID})
	if err != nil || resp.GetUser().GetId() != knownUserID {
		t.Fatalf("GetUser over gRPC at the gateway: %v, %v", resp, err)
	}
	_, err = users.GetUser(ctx, &userv1.GetUserRequest{Id: "expired"})
	if apierr.Code(err) != codes.Unauthenticated || apierr.Reason(err) != "TOKEN_EXPIRED" {
		t.Errorf("refused GetUser over gRPC at the gateway: %v (reason %q), want UNAUTHENTICATED TOKEN_EXPIRED", err, apierr.Reason(err))
	}

	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/users/"+knownUserID, nil)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	r, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK || r.ProtoMajor != 1 {
		t.Errorf("GET over HTTP/1.1: HTTP/%d.%d %d, want HTTP/1.1 200", r.ProtoMajor, r.ProtoMinor, r.StatusCode)
	}
}

// TestH2CLimits: over HTTP/2 the server advertises at most
// MaxConcurrentStreams calls a connection (net/http's default was 250)
// and twice MaxBodyBytes of window a stream, and a client that stops
// reading in the middle of its answers does not hold Shutdown up.
func TestH2CLimits(t *testing.T) {
	srv := quietGateway(t, heldUsers{}, nil, func(c *Config) { c.WriteTimeout = 300 * time.Millisecond }).Server("")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	// Flow control never stops the server: only the socket does.
	const window = 1<<31 - 1
	c, fr := h2conn.Dial(t, lis.Addr().String(), map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: MaxConcurrentStreams,
		http2.SettingInitialWindowSize:    2 * DefaultMaxBodyBytes,
	}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	// A small window of its own, so the server's writes fill the socket.
	_ = c.SetReadBuffer(4 << 10)
	if err := fr.WriteWindowUpdate(0, window-65535); err != nil {
		t.Fatal(err)
	}
	// Some 5 MB of answers (the OpenAPI document, 99 times), more than
	// the sockets hold, and then the client reads no more.
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := range MaxConcurrentStreams - 1 {
		block.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", lis.Addr().String()}, {":path", "/openapi.json"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with a client that stopped reading = %v, want nil once WriteTimeout passed", err)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Errorf("Serve = %v", err)
	}
}

// TestMaxConnectionAge: a connection past Config.MaxConnectionAge is
// closed by its next answer, with Connection: close over HTTP/1.1 and a
// GOAWAY over HTTP/2, and the client's next request comes on a new one;
// younger connections are kept. Kept for ever, a keep-alive or gRPC
// client behind a load balancer never reached a replica added after it
// connected.
func TestMaxConnectionAge(t *testing.T) {
	for _, tt := range []struct {
		name string
		age  time.Duration
		h2c  bool
		// wantNew: each request after the first comes on a new
		// connection; otherwise all three share one.
		wantNew bool
	}{
		{"HTTP/1.1, aged", time.Nanosecond, false, true},
		{"HTTP/1.1, young", 0, false, false},
		{"h2c, aged", time.Nanosecond, true, true},
		{"h2c, young", 0, true, false},
		{"for ever", -1, false, false},
		{"for ever, by the largest age", math.MaxInt64, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewUnstartedServer(nil)
			ts.Config = quietGateway(t, refusingUsers{}, nil, func(c *Config) { c.MaxConnectionAge = tt.age }).Server("")
			var conns atomic.Int32
			track := ts.Config.ConnState
			ts.Config.ConnState = func(c net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
				track(c, s)
			}
			ts.Start()
			defer ts.Close()
			transport := &http.Transport{}
			if tt.h2c {
				var h2c http.Protocols
				h2c.SetUnencryptedHTTP2(true)
				transport.Protocols = &h2c
			}
			client := &http.Client{Transport: transport}
			defer client.CloseIdleConnections()
			for i := range 3 {
				req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/v1/users/"+knownUserID, nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: HTTP %d", i, resp.StatusCode)
				}
			}
			got := conns.Load()
			if tt.wantNew && got < 2 || !tt.wantNew && got != 1 {
				t.Errorf("3 requests came on %d connections; want new ones: %v", got, tt.wantNew)
			}
		})
	}
}
