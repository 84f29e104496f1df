package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
)

// watchingOrders streams three states of an order, pausing between them
// longer than the gateway's call deadline.
type watchingOrders struct {
	orderv1.UnimplementedOrderServiceServer
	pause time.Duration
}

func (w watchingOrders) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	for _, st := range []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_PENDING, orderv1.OrderStatus_ORDER_STATUS_PENDING, orderv1.OrderStatus_ORDER_STATUS_CONFIRMED} {
		if err := stream.Send(&orderv1.WatchOrderResponse{Order: &orderv1.Order{Id: req.GetId(), Status: st}}); err != nil {
			return err
		}
		select {
		case <-time.After(w.pause):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	return nil
}

func TestWatchStreamsNewlineDelimitedJSONPastTheCallDeadline(t *testing.T) {
	orders := startBackend(t, orderv1.OrderService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		orderv1.RegisterOrderServiceServer(r, watchingOrders{pause: 60 * time.Millisecond})
	})
	users := startBackend(t, userv1.UserService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		userv1.RegisterUserServiceServer(r, userv1.UnimplementedUserServiceServer{})
	})
	payments := startBackend(t, paymentv1.PaymentService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		paymentv1.RegisterPaymentServiceServer(r, paymentv1.UnimplementedPaymentServiceServer{})
	})
	gw, err := New(t.Context(), Config{Users: users.conn, Orders: orders.conn, Payments: payments.conn, RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/orders/"+knownUserID+":watch", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	var statuses []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Result struct {
				Order struct{ Status string } `json:"order"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if line.Error != nil {
			t.Fatalf("stream error: %s", line.Error)
		}
		statuses = append(statuses, line.Result.Order.Status)
	}
	want := []string{"ORDER_STATUS_PENDING", "ORDER_STATUS_PENDING", "ORDER_STATUS_CONFIRMED"}
	if len(statuses) != len(want) || statuses[2] != want[2] {
		t.Fatalf("statuses = %v, want %v (the stream outlived the 50ms call deadline)", statuses, want)
	}
}

// failingWatch ends every WatchOrder with err, after first sending the
// order once when sendFirst is set.
type failingWatch struct {
	orderv1.UnimplementedOrderServiceServer
	err       error
	sendFirst bool
}

func (f failingWatch) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	if f.sendFirst {
		if err := stream.Send(&orderv1.WatchOrderResponse{Order: &orderv1.Order{Id: req.GetId()}}); err != nil {
			return err
		}
	}
	return f.err
}

// TestWatchErrors checks that the error a stream ends with is masked and
// carries an ErrorInfo, as a unary call's does: no internal message or
// backend address reaches the client.
func TestWatchErrors(t *testing.T) {
	tests := []struct {
		name       string
		watch      failingWatch
		down       bool // the order service is not running
		wantStatus int
		wantCode   codes.Code
		wantReason string
		wantMsg    string
		// wantRetryAfter is the Retry-After header, "" for none.
		wantRetryAfter string
		// wantChallenge is the WWW-Authenticate header, "" for none.
		wantChallenge string
	}{
		{name: "no token", watch: failingWatch{err: apierr.New(codes.Unauthenticated, "TOKEN_MISSING", "a bearer token is needed")},
			wantStatus: 401, wantCode: codes.Unauthenticated, wantReason: "TOKEN_MISSING", wantMsg: "a bearer token is needed", wantChallenge: "Bearer"},
		{name: "expired token", watch: failingWatch{err: apierr.New(codes.Unauthenticated, "TOKEN_EXPIRED", "the bearer token has expired")},
			wantStatus: 401, wantCode: codes.Unauthenticated, wantReason: "TOKEN_EXPIRED", wantMsg: "the bearer token has expired", wantChallenge: `Bearer error="invalid_token"`},
		{name: "not found", watch: failingWatch{err: apierr.NotFound("ORDER_NOT_FOUND", "order", knownUserID)},
			wantStatus: 404, wantCode: codes.NotFound, wantReason: "ORDER_NOT_FOUND", wantMsg: `order "` + knownUserID + `" not found`},
		{name: "refused with a retry hint", watch: failingWatch{err: apierr.New(codes.ResourceExhausted, "TOO_MANY_WATCHES", "too many watches", apierr.RetryAfter(4500*time.Millisecond))},
			wantStatus: 429, wantCode: codes.ResourceExhausted, wantReason: "TOO_MANY_WATCHES", wantMsg: "too many watches", wantRetryAfter: "5"},
		{name: "refused with a retry hint after a line", watch: failingWatch{err: apierr.New(codes.ResourceExhausted, "TOO_MANY_WATCHES", "too many watches", apierr.RetryAfter(5*time.Second)), sendFirst: true},
			wantStatus: 200, wantCode: codes.ResourceExhausted, wantReason: "TOO_MANY_WATCHES", wantMsg: "too many watches"},
		{name: "internal", watch: failingWatch{err: status.Error(codes.Internal, "open /var/lib/duet/orders.db: disk I/O error")},
			wantStatus: 500, wantCode: codes.Internal, wantReason: apierr.ReasonInternal, wantMsg: "internal error"},
		{name: "internal after a line", watch: failingWatch{err: status.Error(codes.Internal, "open /var/lib/duet/orders.db: disk I/O error"), sendFirst: true},
			wantStatus: 200, wantCode: codes.Internal, wantReason: apierr.ReasonInternal, wantMsg: "internal error"},
		{name: "backend down", down: true,
			wantStatus: 503, wantCode: codes.Unavailable, wantReason: apierr.ReasonUnavailable, wantMsg: "service unavailable", wantRetryAfter: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orders := startBackend(t, orderv1.OrderService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
				orderv1.RegisterOrderServiceServer(r, tt.watch)
			})
			if tt.down {
				orders.srv.Stop()
			}
			none := startBackend(t, "", func(grpc.ServiceRegistrar) {})
			gw, err := New(t.Context(), Config{Users: none.conn, Orders: orders.conn, Payments: none.conn, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(gw)
			defer srv.Close()
			req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v1/orders/"+knownUserID+":watch", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("HTTP status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.wantRetryAfter)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.wantChallenge)
			}
			for _, leak := range []string{"/var/lib", "disk I/O", "127.0.0.1", "dial"} {
				if strings.Contains(string(body), leak) {
					t.Errorf("internals leaked (%q): %s", leak, body)
				}
			}
			// A stream that could not be opened fails as a unary call does;
			// one that was ends with an {"error": …} line.
			type statusJSON struct {
				Code    codes.Code `json:"code"`
				Message string     `json:"message"`
				Details []struct {
					Type   string `json:"@type"`
					Reason string `json:"reason"`
				} `json:"details"`
			}
			lines := strings.Split(strings.TrimSpace(string(body)), "\n")
			var last struct {
				statusJSON
				Error *statusJSON `json:"error"`
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
				t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
			}
			e := last.statusJSON
			if last.Error != nil {
				e = *last.Error
			}
			if e.Code != tt.wantCode || e.Message != tt.wantMsg || len(e.Details) == 0 || e.Details[0].Type != errorInfoType || e.Details[0].Reason != tt.wantReason {
				t.Errorf("stream ended with %+v; want code %v, message %q, an ErrorInfo first with reason %s", e, tt.wantCode, tt.wantMsg, tt.wantReason)
			}
		})
	}
}

// endlessWatch sends the order once, unless silent, then waits for the
// stream to end; started learns of each call.
type endlessWatch struct {
	orderv1.UnimplementedOrderServiceServer
	silent  bool
	started chan struct{}
}

func (w endlessWatch) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	w.started <- struct{}{}
	if !w.silent {
		if err := stream.Send(&orderv1.WatchOrderResponse{Order: &orderv1.Order{Id: req.GetId()}}); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// quietGateway returns a Gateway that logs nowhere, over test backends
// serving users and orders (nil: a backend serving nothing) and a payment
// backend serving nothing, its Config changed by adjust.
func quietGateway(t *testing.T, users userv1.UserServiceServer, orders orderv1.OrderServiceServer, adjust ...func(*Config)) *Gateway {
	t.Helper()
	userConn := startBackend(t, "", func(r grpc.ServiceRegistrar) {
		if users != nil {
			userv1.RegisterUserServiceServer(r, users)
		}
	}).conn
	orderConn := startBackend(t, "", func(r grpc.ServiceRegistrar) {
		if orders != nil {
			orderv1.RegisterOrderServiceServer(r, orders)
		}
	}).conn
	none := startBackend(t, "", func(grpc.ServiceRegistrar) {})
	cfg := Config{Users: userConn, Orders: orderConn, Payments: none.conn, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range adjust {
		f(&cfg)
	}
	gw, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// TestShutdownEndsWatches: the server from Server ends an open watch when
// its Shutdown starts, saying UNAVAILABLE SHUTTING_DOWN with a retry delay
// (in a last line, or as a 503 when no line went before), instead of
// waiting for the watch, which ends only with its order's saga.
func TestShutdownEndsWatches(t *testing.T) {
	for _, silent := range []bool{false, true} {
		name := "after a line"
		if silent {
			name = "before any line"
		}
		t.Run(name, func(t *testing.T) {
			watch := endlessWatch{silent: silent, started: make(chan struct{}, 1)}
			gw := quietGateway(t, nil, watch)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := gw.Server(lis.Addr().String())
			served := make(chan error, 1)
			go func() { served <- srv.Serve(lis) }()
			defer srv.Close()

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			type answer struct {
				resp *http.Response
				err  error
			}
			answered := make(chan answer, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+lis.Addr().String()+"/v1/orders/"+knownUserID+":watch", nil)
				resp, err := http.DefaultClient.Do(req)
				answered <- answer{resp, err}
			}()
			select {
			case <-watch.started:
			case <-ctx.Done():
				t.Fatal("the watch never reached the backend")
			}
			var body *bufio.Reader
			if !silent {
				a := <-answered
				if a.err != nil {
					t.Fatal(a.err)
				}
				defer a.resp.Body.Close()
				body = bufio.NewReader(a.resp.Body)
				if first, err := body.ReadString('\n'); err != nil || !strings.Contains(first, `"result"`) {
					t.Fatalf("first line %q, %v", first, err)
				}
			}

			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown = %v, want nil once the watch has ended", err)
			}
			if err := <-served; err != http.ErrServerClosed {
				t.Errorf("Serve = %v", err)
			}
			if silent {
				a := <-answered
				if a.err != nil {
					t.Fatal(a.err)
				}
				defer a.resp.Body.Close()
				if a.resp.StatusCode != 503 || a.resp.Header.Get("Retry-After") != "1" {
					t.Errorf("HTTP %d, Retry-After %q; want 503, 1", a.resp.StatusCode, a.resp.Header.Get("Retry-After"))
				}
				body = bufio.NewReader(a.resp.Body)
			}
			rest, err := io.ReadAll(body)
			if err != nil {
				t.Fatalf("reading the rest of the watch: %v", err)
			}
			type statusJSON struct {
				Code    codes.Code `json:"code"`
				Details []struct {
					Reason     string `json:"reason"`
					RetryDelay string `json:"retryDelay"`
				} `json:"details"`
			}
			var last struct {
				statusJSON
				Error *statusJSON `json:"error"`
			}
			if err := json.Unmarshal(rest, &last); err != nil {
				t.Fatalf("last line %q: %v", rest, err)
			}
			e := last.statusJSON
			if last.Error != nil {
				e = *last.Error
			}
			if e.Code != codes.Unavailable || len(e.Details) != 2 || e.Details[0].Reason != apierr.ReasonShuttingDown || e.Details[1].RetryDelay != "1s" {
				t.Errorf("watch ended with %s; want UNAVAILABLE, reason %s, a retry delay of 1s", rest, apierr.ReasonShuttingDown)
			}
		})
	}
}

// TestWatchAfterDrain: a watch that arrives after Drain (on a server
// that is still serving, as one in front of the Gateway may be) is refused
// at once as UNAVAILABLE SHUTTING_DOWN, a 503 with Retry-After, not
// reported as cancelled by its client.
func TestWatchAfterDrain(t *testing.T) {
	gw := quietGateway(t, nil, endlessWatch{started: make(chan struct{}, 1)})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	gw.Drain()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v1/orders/"+knownUserID+":watch", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), apierr.ReasonShuttingDown) {
		t.Errorf("watch after Drain: HTTP %d, Retry-After %q, %s; want 503, 1, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body, apierr.ReasonShuttingDown)
	}
}

// floodingWatch streams large states of an order as fast as it can send
// them, and closes ended when its stream ends.
type floodingWatch struct {
	orderv1.UnimplementedOrderServiceServer
	ended chan struct{}
}

func (w floodingWatch) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	defer close(w.ended)
	order := &orderv1.Order{Id: req.GetId()}
	for range 1000 {
		order.Items = append(order.Items, &orderv1.LineItem{Sku: strings.Repeat("S", 64), Quantity: 1})
	}
	for {
		if err := stream.Send(&orderv1.WatchOrderResponse{Order: order}); err != nil {
			return err
		}
	}
}

// TestWatchClientNotReading: a watch whose client stops reading ends once
// a line has waited WriteTimeout to go out, and its backend stream with
// it; without a write deadline it lasted as long as the client's kernel
// kept the connection open.
func TestWatchClientNotReading(t *testing.T) {
	orders := floodingWatch{ended: make(chan struct{})}
	gw := quietGateway(t, nil, orders, func(c *Config) { c.WriteTimeout = 200 * time.Millisecond })
	srv := httptest.NewServer(gw)
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /v1/orders/0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11:watch HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-orders.ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the watch of a client that reads nothing is still streaming")
	}
}
