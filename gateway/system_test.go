package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/services/order"
	"github.com/duetkit/duet/services/payment"
	"github.com/duetkit/duet/services/user"
)

// realSystem is the gateway in front of the real user, payment and order
// services, each behind kit/server on its own loopback port, reached
// through kit/client, with SQLite databases: the production wiring.
type realSystem struct {
	*env
	servers map[string]*server.Server
}

// serveReal serves register on a kit/server at 127.0.0.1:0 and returns a
// kit/client connection to it. Cleanups drain the server, then close.
func serveReal(t *testing.T, name string, log *slog.Logger, register func(grpc.ServiceRegistrar), closeSvc func() error) (*server.Server, *grpc.ClientConn) {
	t.Helper()
	srv, err := server.New(server.Config{Name: name, Logger: log.With("service", name)})
	if err != nil {
		t.Fatal(err)
	}
	register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := client.New(lis.Addr().String(), client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("%s: Serve: %v", name, err)
		}
		if err := closeSvc(); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
	})
	return srv, conn
}

func startReal(t *testing.T) *realSystem {
	t.Helper()
	logs := &syncBuffer{}
	log := logger.New(logs, slog.LevelInfo, "")
	dir := t.TempDir()
	ctx := t.Context()
	rs := &realSystem{env: &env{logs: logs}, servers: map[string]*server.Server{}}

	users, err := user.Open(ctx, user.Config{DatabaseURL: "sqlite:" + filepath.Join(dir, "user.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var userConn, paymentConn, orderConn *grpc.ClientConn
	rs.servers["user"], userConn = serveReal(t, "user", log, users.Register, users.Close)

	payments, err := payment.Open(ctx, payment.Config{DatabaseURL: "sqlite:" + filepath.Join(dir, "payment.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rs.servers["payment"], paymentConn = serveReal(t, "payment", log, payments.Register, payments.Close)

	orders, err := order.Open(ctx, order.Config{DatabaseURL: "sqlite:" + filepath.Join(dir, "order.db"), Logger: log, Users: userConn, Payments: paymentConn})
	if err != nil {
		t.Fatal(err)
	}
	rs.servers["order"], orderConn = serveReal(t, "order", log, orders.Register, orders.Close)

	gw, err := New(ctx, Config{Users: userConn, Orders: orderConn, Payments: paymentConn, Logger: log.With("service", "gateway")})
	if err != nil {
		t.Fatal(err)
	}
	rs.gw = gw
	rs.srv = httptest.NewServer(gw)
	t.Cleanup(rs.srv.Close)
	return rs
}

// TestRealServices drives the REST surface over the real services: the
// routes of the issue, their bad inputs, and the request id across hops.
func TestRealServices(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three services")
	}
	s := startReal(t)

	resp := s.do(t, "POST", "/v1/users", `{"email":"Ada@Example.com","name":"Ada"}`, "X-Request-ID", "e2e-create")
	if resp.status != http.StatusOK {
		t.Fatalf("create user: %d %s", resp.status, resp.body)
	}
	userID, _ := get(resp.json(t), "user.id").(string)
	if userID == "" {
		t.Fatalf("no user id in %s", resp.body)
	}
	resp = s.do(t, "POST", "/v1/payments", `{"amount":{"currencyCode":"EUR","units":"500"},"paymentMethodToken":"tok_approve","idempotencyKey":"pay-1"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("charge: %d %s", resp.status, resp.body)
	}
	paymentID, _ := get(resp.json(t), "payment.id").(string)

	order := func(token, key string) string {
		return `{"userId":"` + userID + `","items":[{"sku":"BOOK-1","quantity":2,"unitPrice":{"currencyCode":"EUR","units":"1250"}}],"paymentToken":"` + token + `","idempotencyKey":"` + key + `"}`
	}
	resp = s.do(t, "POST", "/v1/orders", order("tok_approve", "order-1"))
	if resp.status != http.StatusOK || get(resp.json(t), "order.status") != "ORDER_STATUS_PAID" {
		t.Fatalf("create order: %d %s", resp.status, resp.body)
	}
	orderID, _ := get(resp.json(t), "order.id").(string)

	ok := []struct {
		name, method, path string
		body               any
		want               map[string]any
	}{
		{"get user", "GET", "/v1/users/" + userID, nil, map[string]any{"user.email": "Ada@Example.com"}},
		{"list users", "GET", "/v1/users?pageSize=10", nil, map[string]any{"users.0.id": userID}},
		{"patch user", "PATCH", "/v1/users/" + userID, `{"name":"Ada L."}`, map[string]any{"user.name": "Ada L.", "user.email": "Ada@Example.com"}},
		{"get order", "GET", "/v1/orders/" + orderID, nil, map[string]any{"order.total.units": "2500", "order.status": "ORDER_STATUS_PAID"}},
		{"declined order is a business outcome", "POST", "/v1/orders", order("tok_decline", "order-2"), map[string]any{"order.status": "ORDER_STATUS_PAYMENT_FAILED"}},
		{"same key, same order", "POST", "/v1/orders", order("tok_approve", "order-1"), map[string]any{"order.id": orderID}},
		{"list orders", "GET", "/v1/users/" + userID + "/orders", nil, map[string]any{"orders.0.id": orderID}},
		{"refund", "POST", "/v1/payments/" + paymentID + ":refund", `{}`, map[string]any{"payment.status": "PAYMENT_STATUS_REFUNDED"}},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			resp := s.do(t, tt.method, tt.path, tt.body)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			m := resp.json(t)
			for path, want := range tt.want {
				if got := get(m, path); got != want {
					t.Errorf("%s = %v, want %v (%s)", path, got, want, resp.body)
				}
			}
		})
	}

	bad := []errorCase{
		{name: "duplicate email, other case", method: "POST", path: "/v1/users", body: `{"email":"ada@example.COM","name":"Other"}`,
			httpStatus: 409, code: codes.AlreadyExists, reason: "EMAIL_TAKEN"},
		{name: "invalid email", method: "POST", path: "/v1/users", body: `{"email":"not-an-email","name":"X"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "email"},
		{name: "missing name", method: "POST", path: "/v1/users", body: `{"email":"x@example.com"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "name"},
		{name: "unknown user", method: "GET", path: "/v1/users/" + unknownID,
			httpStatus: 404, code: codes.NotFound, reason: "USER_NOT_FOUND"},
		{name: "malformed id", method: "GET", path: "/v1/users/42",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "id"},
		{name: "forged page token", method: "GET", path: "/v1/users?pageToken=garbage",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "page_token"},
		{name: "unknown order", method: "GET", path: "/v1/orders/" + unknownID,
			httpStatus: 404, code: codes.NotFound, reason: "ORDER_NOT_FOUND"},
		{name: "order without items", method: "POST", path: "/v1/orders",
			body:       `{"userId":"` + userID + `","items":[],"paymentToken":"tok_approve","idempotencyKey":"k"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items"},
		{name: "declined charge", method: "POST", path: "/v1/payments",
			body:       `{"amount":{"currencyCode":"EUR","units":"500"},"paymentMethodToken":"tok_decline","idempotencyKey":"pay-2"}`,
			httpStatus: 402, code: codes.FailedPrecondition, reason: "PAYMENT_DECLINED"},
		{name: "provider down", method: "POST", path: "/v1/payments",
			body:       `{"amount":{"currencyCode":"EUR","units":"500"},"paymentMethodToken":"tok_unavailable","idempotencyKey":"pay-3"}`,
			httpStatus: 503, code: codes.Unavailable, reason: "PROVIDER_UNAVAILABLE"},
		{name: "unknown field", method: "POST", path: "/v1/users", body: `{"email":"y@example.com","name":"Y","admin":true}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "admin"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			checkError(t, s.do(t, tt.method, tt.path, tt.body), tt)
		})
	}

	t.Run("request id in every hop's log", func(t *testing.T) {
		resp := s.do(t, "POST", "/v1/orders", order("tok_approve", "order-3"), "X-Request-ID", "e2e-order")
		if resp.status != http.StatusOK || resp.header.Get("X-Request-ID") != "e2e-order" {
			t.Fatalf("status %d, X-Request-ID %q: %s", resp.status, resp.header.Get("X-Request-ID"), resp.body)
		}
		services := map[string]bool{}
		for _, rec := range s.logs.lines(t) {
			if rec["request_id"] == "e2e-order" {
				svc, _ := rec["service"].(string)
				services[svc] = true
			}
		}
		for _, svc := range []string{"gateway", "order", "user", "payment"} {
			if !services[svc] {
				t.Errorf("no %s log line with the request id (saw %v)", svc, services)
			}
		}
	})

	t.Run("readyz follows the services' health", func(t *testing.T) {
		if resp := s.do(t, "GET", "/readyz", nil); resp.status != http.StatusOK {
			t.Fatalf("readyz %d: %s", resp.status, resp.body)
		}
		s.servers["order"].SetServing(false)
		resp := s.do(t, "GET", "/readyz", nil)
		if resp.status != http.StatusServiceUnavailable || !strings.Contains(string(resp.body), `"order":"NOT_SERVING"`) {
			t.Fatalf("readyz %d: %s", resp.status, resp.body)
		}
		s.servers["order"].SetServing(true)
	})
}
