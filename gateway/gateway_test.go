package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"

	"github.com/duetkit/duet/internal/logbuffer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Ids the fakes know; anything else is not found.
const (
	knownUserID    = "3f9a4c1e-8b2d-4e6f-9a0b-1c2d3e4f5a6b"
	knownPaymentID = "7c6b5a49-3827-4165-8a9b-0c1d2e3f4a5b"
	unknownID      = "00000000-0000-4000-8000-000000000000"
	secret         = "postgres://admin:hunter2@10.0.0.7/users"
)

// calls records what the fakes received, for assertions on what the
// gateway sent over gRPC.
type calls struct {
	mu       sync.Mutex
	md       []metadata.MD
	deadline []bool
	updates  []*userv1.UpdateUserRequest
	lists    []*userv1.ListUsersRequest
	creates  []*userv1.CreateUserRequest
	orders   []*orderv1.CreateOrderRequest
}

func (c *calls) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	_, hasDeadline := ctx.Deadline()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.md = append(c.md, md)
	c.deadline = append(c.deadline, hasDeadline)
}

func (c *calls) lastMD(t *testing.T) metadata.MD {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.md) == 0 {
		t.Fatal("the backend received no call")
	}
	return c.md[len(c.md)-1]
}

func testUser(id, email, name string) *userv1.User {
	return &userv1.User{Id: id, Email: email, Name: name, CreateTime: timestamppb.New(time.Unix(1700000000, 0))}
}

// fakeUsers answers like the user service would, from fixed data.
type fakeUsers struct {
	userv1.UnimplementedUserServiceServer
	calls *calls
}

func (f *fakeUsers) CreateUser(ctx context.Context, req *userv1.CreateUserRequest) (*userv1.CreateUserResponse, error) {
	f.calls.record(ctx)
	f.calls.mu.Lock()
	f.calls.creates = append(f.calls.creates, req)
	f.calls.mu.Unlock()
	switch req.GetEmail() {
	case "taken@example.com":
		return nil, apierr.New(codes.AlreadyExists, "EMAIL_TAKEN", "email already in use", apierr.Field("email", "already in use"))
	case "internal@example.com":
		return nil, status.Error(codes.Internal, "insert failed on "+secret)
	case "huge@example.com":
		// An answer over grpc-go's 4 MiB receive limit.
		return &userv1.CreateUserResponse{User: testUser(knownUserID, req.GetEmail(), strings.Repeat("n", 5<<20))}, nil
	case "unknown@example.com":
		return nil, errors.New("driver: bad connection to " + secret)
	}
	if !strings.Contains(req.GetEmail(), "@") {
		return nil, apierr.InvalidField("email", "value must be a valid email address")
	}
	return &userv1.CreateUserResponse{User: testUser(knownUserID, req.GetEmail(), req.GetName())}, nil
}

func (f *fakeUsers) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	f.calls.record(ctx)
	if req.GetId() != knownUserID {
		return nil, apierr.NotFound("USER_NOT_FOUND", "user", req.GetId())
	}
	return &userv1.GetUserResponse{User: testUser(knownUserID, "ada@example.com", "Ada")}, nil
}

func (f *fakeUsers) ListUsers(ctx context.Context, req *userv1.ListUsersRequest) (*userv1.ListUsersResponse, error) {
	f.calls.record(ctx)
	f.calls.mu.Lock()
	f.calls.lists = append(f.calls.lists, req)
	f.calls.mu.Unlock()
	return &userv1.ListUsersResponse{
		Users:         []*userv1.User{testUser(knownUserID, "ada@example.com", "Ada")},
		NextPageToken: "next",
	}, nil
}

func (f *fakeUsers) UpdateUser(ctx context.Context, req *userv1.UpdateUserRequest) (*userv1.UpdateUserResponse, error) {
	f.calls.record(ctx)
	f.calls.mu.Lock()
	f.calls.updates = append(f.calls.updates, req)
	f.calls.mu.Unlock()
	u := testUser(req.GetUser().GetId(), "ada@example.com", "Ada")
	for _, p := range req.GetUpdateMask().GetPaths() {
		switch p {
		case "name":
			u.Name = req.GetUser().GetName()
		case "email":
			u.Email = req.GetUser().GetEmail()
		}
	}
	return &userv1.UpdateUserResponse{User: u}, nil
}

// fakeOrders answers like the order service would.
type fakeOrders struct {
	orderv1.UnimplementedOrderServiceServer
	calls *calls
}

func (f *fakeOrders) CreateOrder(ctx context.Context, req *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	f.calls.record(ctx)
	f.calls.mu.Lock()
	f.calls.orders = append(f.calls.orders, req)
	f.calls.mu.Unlock()
	if req.GetIdempotencyKey() == "bad-nested-field" {
		// A service names fields by their proto names.
		return nil, apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, "invalid request",
			apierr.Field("items[0].unit_price.currency_code", "must be an ISO 4217 code"),
			apierr.Field(`labels["snake_key"].max_in_flight`, "must be set"))
	}
	total := &typev1.Money{}
	for _, it := range req.GetItems() {
		total.CurrencyCode = it.GetUnitPrice().GetCurrencyCode()
		total.Units += int64(it.GetQuantity()) * it.GetUnitPrice().GetUnits()
	}
	return &orderv1.CreateOrderResponse{Order: &orderv1.Order{
		Id: "5e4d3c2b-1a09-4876-b543-210fedcba987", UserId: req.GetUserId(), Items: req.GetItems(),
		Total: total, Status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, IdempotencyKey: req.GetIdempotencyKey(),
	}}, nil
}

func (f *fakeOrders) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	f.calls.record(ctx)
	return nil, apierr.NotFound("ORDER_NOT_FOUND", "order", req.GetId())
}

func (f *fakeOrders) ListOrders(ctx context.Context, req *orderv1.ListOrdersRequest) (*orderv1.ListOrdersResponse, error) {
	f.calls.record(ctx)
	return &orderv1.ListOrdersResponse{Orders: []*orderv1.Order{{Id: "o1", UserId: req.GetUserId(), Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED, FailureReason: "PAYMENT_DECLINED"}}}, nil
}

// fakePayments follows the documented test tokens of the payment service.
type fakePayments struct {
	paymentv1.UnimplementedPaymentServiceServer
	calls *calls
}

func (f *fakePayments) Charge(ctx context.Context, req *paymentv1.ChargeRequest) (*paymentv1.ChargeResponse, error) {
	f.calls.record(ctx)
	switch req.GetPaymentMethodToken() {
	case "tok_approve":
		return &paymentv1.ChargeResponse{Payment: &paymentv1.Payment{Id: knownPaymentID, Amount: req.GetAmount(), Status: paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED}}, nil
	case "tok_decline":
		return nil, apierr.New(codes.FailedPrecondition, "PAYMENT_DECLINED", "the payment was declined")
	case "tok_insufficient":
		return nil, apierr.New(codes.FailedPrecondition, "INSUFFICIENT_FUNDS", "insufficient funds")
	case "tok_unavailable":
		return nil, apierr.Unavailable("PROVIDER_UNAVAILABLE", "payment provider unavailable", 1500*time.Millisecond)
	}
	return nil, apierr.InvalidField("payment_method_token", "unknown token")
}

func (f *fakePayments) GetPayment(ctx context.Context, req *paymentv1.GetPaymentRequest) (*paymentv1.GetPaymentResponse, error) {
	f.calls.record(ctx)
	return nil, apierr.NotFound("PAYMENT_NOT_FOUND", "payment", req.GetId())
}

func (f *fakePayments) Refund(ctx context.Context, req *paymentv1.RefundRequest) (*paymentv1.RefundResponse, error) {
	f.calls.record(ctx)
	if req.GetId() != knownPaymentID {
		return nil, apierr.NotFound("PAYMENT_NOT_FOUND", "payment", req.GetId())
	}
	return &paymentv1.RefundResponse{Payment: &paymentv1.Payment{Id: req.GetId(), Status: paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED}}, nil
}

// backendServer is one fake service on a real gRPC server over loopback.
type backendServer struct {
	addr   string
	conn   *grpc.ClientConn
	health *health.Server
	srv    *grpc.Server
}

// startBackend serves a fake on 127.0.0.1:0 with grpc.health.v1 reporting
// service SERVING, and returns a client connection to it.
func startBackend(t *testing.T, service string, register func(grpc.ServiceRegistrar)) *backendServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	if service != "" {
		hs.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-served
	})
	return &backendServer{addr: lis.Addr().String(), conn: conn, health: hs, srv: srv}
}

// env is a gateway in front of three fake backends.
type env struct {
	gw                      *Gateway
	srv                     *httptest.Server
	users, orders, payments *backendServer
	userCalls, orderCalls   *calls
	paymentCalls            *calls
	logs                    *logbuffer.Buffer
}

const testMaxBody = 4 << 10

func newEnv(t *testing.T, configure ...func(*Config)) *env {
	t.Helper()
	e := &env{userCalls: &calls{}, orderCalls: &calls{}, paymentCalls: &calls{}, logs: &logbuffer.Buffer{}}
	e.users = startBackend(t, userv1.UserService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		userv1.RegisterUserServiceServer(r, &fakeUsers{calls: e.userCalls})
	})
	e.orders = startBackend(t, orderv1.OrderService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		orderv1.RegisterOrderServiceServer(r, &fakeOrders{calls: e.orderCalls})
	})
	e.payments = startBackend(t, paymentv1.PaymentService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		paymentv1.RegisterPaymentServiceServer(r, &fakePayments{calls: e.paymentCalls})
	})
	// Inventory and notifications only need to be routed to: their
	// handlers answer UNIMPLEMENTED.
	inventory := startBackend(t, inventoryv1.InventoryService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		inventoryv1.RegisterInventoryServiceServer(r, inventoryv1.UnimplementedInventoryServiceServer{})
	})
	notifications := startBackend(t, notificationv1.NotificationService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		notificationv1.RegisterNotificationServiceServer(r, notificationv1.UnimplementedNotificationServiceServer{})
	})
	cfg := Config{
		Users: e.users.conn, Orders: e.orders.conn, Payments: e.payments.conn,
		Inventory: inventory.conn, Notifications: notifications.conn,
		Logger:       slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MaxBodyBytes: testMaxBody,
	}
	for _, c := range configure {
		c(&cfg)
	}
	gw, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.gw = gw
	e.srv = httptest.NewServer(gw)
	t.Cleanup(e.srv.Close)
	return e
}

// response is an HTTP answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends a request; body may be a string (sent with its length) or an
// io.Reader (sent chunked, length unknown).
func (e *env) do(t *testing.T, method, path string, body any, header ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = struct{ io.Reader }{b} // hide the length: chunked
	default:
		t.Fatalf("unsupported body %T", body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// get returns the value at a dotted path of a decoded JSON object, with
// numeric segments indexing arrays.
func get(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i := 0
			for _, c := range k {
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func TestNewRequiresConnections(t *testing.T) {
	if _, err := New(t.Context(), Config{}); err == nil {
		t.Fatal("New without connections: want an error")
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path, body string
		want                     map[string]any // dotted path -> value in the response
	}{
		{
			name: "create user", method: "POST", path: "/v1/users",
			body: `{"email":"ada@example.com","name":"Ada"}`,
			want: map[string]any{"user.id": knownUserID, "user.email": "ada@example.com", "user.createTime": "2023-11-14T22:13:20Z"},
		},
		{
			name: "get user", method: "GET", path: "/v1/users/" + knownUserID,
			want: map[string]any{"user.id": knownUserID, "user.name": "Ada"},
		},
		{
			name: "list users", method: "GET", path: "/v1/users?pageSize=2&pageToken=abc",
			want: map[string]any{"users.0.id": knownUserID, "nextPageToken": "next"},
		},
		{
			name: "update user infers the mask", method: "PATCH", path: "/v1/users/" + knownUserID,
			body: `{"name":"Grace"}`,
			want: map[string]any{"user.id": knownUserID, "user.name": "Grace", "user.email": "ada@example.com"},
		},
		{
			name: "create order", method: "POST", path: "/v1/orders",
			body: `{"userId":"` + knownUserID + `","items":[{"sku":"BOOK-1","quantity":2,"unitPrice":{"currencyCode":"EUR","units":"1250"}}],"paymentToken":"tok_approve","idempotencyKey":"k1"}`,
			// proto3 JSON: int64 as a string, enums by name.
			want: map[string]any{"order.total.units": "2500", "order.total.currencyCode": "EUR", "order.status": "ORDER_STATUS_CONFIRMED", "order.items.0.unitPrice.units": "1250"},
		},
		{
			name: "list a user's orders", method: "GET", path: "/v1/users/" + knownUserID + "/orders",
			want: map[string]any{"orders.0.userId": knownUserID, "orders.0.failureReason": "PAYMENT_DECLINED"},
		},
		{
			name: "charge", method: "POST", path: "/v1/payments",
			body: `{"amount":{"currencyCode":"USD","units":1999},"paymentMethodToken":"tok_approve","idempotencyKey":"c1"}`,
			want: map[string]any{"payment.id": knownPaymentID, "payment.amount.units": "1999", "payment.status": "PAYMENT_STATUS_CAPTURED"},
		},
		{
			name: "refund", method: "POST", path: "/v1/payments/" + knownPaymentID + ":refund", body: `{}`,
			want: map[string]any{"payment.status": "PAYMENT_STATUS_REFUNDED"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			if tt.body != "" {
				body = tt.body
			}
			resp := e.do(t, tt.method, tt.path, body)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.status, resp.body)
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			m := resp.json(t)
			for path, want := range tt.want {
				if got := get(m, path); got != want {
					t.Errorf("%s = %v, want %v (body %s)", path, got, want, resp.body)
				}
			}
			// Unset fields are left out rather than rendered empty.
			if bytes.Contains(resp.body, []byte(`""`)) || bytes.Contains(resp.body, []byte("null")) {
				t.Errorf("body has empty values: %s", resp.body)
			}
			// Backend metadata never leaks into HTTP headers.
			for k := range resp.header {
				if strings.HasPrefix(strings.ToLower(k), "grpc-") {
					t.Errorf("response header %s leaked from gRPC", k)
				}
			}
		})
	}

	t.Run("the mask and the id reach the backend", func(t *testing.T) {
		e.userCalls.mu.Lock()
		defer e.userCalls.mu.Unlock()
		if len(e.userCalls.updates) != 1 {
			t.Fatalf("%d UpdateUser calls, want 1", len(e.userCalls.updates))
		}
		u := e.userCalls.updates[0]
		if got := u.GetUpdateMask().GetPaths(); len(got) != 1 || got[0] != "name" {
			t.Errorf("update_mask %v, want [name]", got)
		}
		if u.GetUser().GetId() != knownUserID {
			t.Errorf("user.id %q, want the path's", u.GetUser().GetId())
		}
		l := e.userCalls.lists[0]
		if l.GetPageSize() != 2 || l.GetPageToken() != "abc" {
			t.Errorf("ListUsers got page_size %d page_token %q", l.GetPageSize(), l.GetPageToken())
		}
	})

	t.Run("every call carries a deadline", func(t *testing.T) {
		for _, c := range []*calls{e.userCalls, e.orderCalls, e.paymentCalls} {
			c.mu.Lock()
			for i, d := range c.deadline {
				if !d {
					t.Errorf("call %d had no deadline", i)
				}
			}
			c.mu.Unlock()
		}
	})
}

func TestUpdateUserExplicitMask(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "PATCH", "/v1/users/"+knownUserID+"?updateMask=email", `{"name":"Ignored","email":"new@example.com"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	e.userCalls.mu.Lock()
	defer e.userCalls.mu.Unlock()
	if got := e.userCalls.updates[0].GetUpdateMask().GetPaths(); len(got) != 1 || got[0] != "email" {
		t.Errorf("update_mask %v, want the explicit [email]", got)
	}
}

func TestServerTimeouts(t *testing.T) {
	e := newEnv(t)
	s := e.gw.Server("127.0.0.1:0")
	if s.Handler != e.gw {
		t.Error("Server's handler is not the gateway")
	}
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": s.ReadHeaderTimeout, "ReadTimeout": s.ReadTimeout,
		"WriteTimeout": s.WriteTimeout, "IdleTimeout": s.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s not set", name)
		}
	}
	if s.MaxHeaderBytes <= 0 {
		t.Error("MaxHeaderBytes not set")
	}
	if s.WriteTimeout <= s.ReadTimeout {
		t.Errorf("WriteTimeout %v must exceed ReadTimeout %v", s.WriteTimeout, s.ReadTimeout)
	}

	custom := newEnv(t, func(c *Config) { c.ReadHeaderTimeout = 42 * time.Second; c.MaxHeaderBytes = 1234 })
	if s := custom.gw.Server(":0"); s.ReadHeaderTimeout != 42*time.Second || s.MaxHeaderBytes != 1234 {
		t.Errorf("Config not honoured: %v %d", s.ReadHeaderTimeout, s.MaxHeaderBytes)
	}

	// An unset write timeout leaves room for a longer call than the
	// default; a set one is kept.
	// A watch's lines keep the write timeout as set, or the default.
	for _, tt := range []struct {
		name                                  string
		request, write, wantWrite, wantWindow time.Duration
	}{
		{"defaults", 0, 0, DefaultWriteTimeout, DefaultWriteTimeout},
		{"a minute a call", time.Minute, 0, DefaultReadTimeout + time.Minute + 5*time.Second, DefaultWriteTimeout},
		{"set", time.Minute, 3 * time.Second, 3 * time.Second, 3 * time.Second},
		{"negative", 0, -time.Second, DefaultWriteTimeout, DefaultWriteTimeout},
	} {
		e := newEnv(t, func(c *Config) { c.RequestTimeout, c.WriteTimeout = tt.request, tt.write })
		if got := e.gw.Server(":0").WriteTimeout; got != tt.wantWrite {
			t.Errorf("%s: WriteTimeout %v, want %v", tt.name, got, tt.wantWrite)
		}
		if got := e.gw.lineWindow; got != tt.wantWindow {
			t.Errorf("%s: a watch line's window %v, want %v", tt.name, got, tt.wantWindow)
		}
	}
}

// TestRealServer runs the gateway behind the http.Server it builds, on a
// real listener, so the timeouts and header limit are exercised as set.
func TestRealServer(t *testing.T) {
	e := newEnv(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := e.gw.Server(lis.Addr().String())
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+lis.Addr().String()+"/v1/users/"+knownUserID, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestShutdownClosesUnusedConnections: a connection on which no request
// has begun does not hold Shutdown up (net/http alone waits 5 s for it),
// while one that is idle after a request is closed as usual.
func TestShutdownClosesUnusedConnections(t *testing.T) {
	e := newEnv(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := e.gw.Server(lis.Addr().String())
	accepted := make(chan struct{}, 1)
	track := s.ConnState
	s.ConnState = func(c net.Conn, state http.ConnState) {
		if track != nil {
			track(c, state)
		}
		if state == http.StateNew {
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()

	silent, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	<-accepted // the server holds it, in StateNew

	// Less than net/http's 5 s grace for new connections: without the
	// gateway's own closing, Shutdown gives up with DeadlineExceeded.
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a connection that sent nothing: %v", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
	// The server closed the silent connection: reading it ends.
	if err := silent.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on the silent connection after Shutdown: %v, want EOF or reset", err)
	}
}

// TestAnyContentTypeIsJSON checks that bodies are read as JSON whatever
// their declared type, as curl -d sends form-urlencoded by default.
func TestAnyContentTypeIsJSON(t *testing.T) {
	e := newEnv(t)
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8"} {
		resp := e.do(t, "POST", "/v1/users", `{"email":"ct@example.com","name":"CT"}`, "Content-Type", ct)
		if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: status %d, Content-Type %q: %s", ct, resp.status, resp.header.Get("Content-Type"), resp.body)
		}
	}
}

// TestPanicAfterHeadersAborts: a handler that panics once its response
// has begun does not end the response cleanly: the client sees a broken
// body, not a complete one missing its end, and the panic is logged.
func TestPanicAfterHeadersAborts(t *testing.T) {
	e := newEnv(t)
	if err := e.gw.mux.HandlePath("GET", "/half", func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "{\"line\":1}\n")
		w.(http.Flusher).Flush()
		panic("midway")
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := e.srv.Client().Get(e.srv.URL + "/half")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("the body read to its end (%q): a cut-off response looked complete", body)
	}
	var logged, accessLogged bool
	for _, rec := range e.logs.Lines(t) {
		if rec["panic"] == "midway" {
			logged = true
		}
		if rec["msg"] == "http request" && rec["path"] == "/half" {
			accessLogged = true
			if rec["level"] != "ERROR" || rec["aborted"] != true {
				t.Errorf("access log of the cut-off response: %v, want an error marked aborted", rec)
			}
		}
	}
	if !logged || !accessLogged {
		t.Errorf("panic logged %v, request logged %v", logged, accessLogged)
	}
}

// TestPanicIsAJSON500 checks that a panic while serving becomes an opaque
// JSON 500 with the request id, and is logged.
func TestPanicIsAJSON500(t *testing.T) {
	e := newEnv(t)
	if err := e.gw.mux.HandlePath("GET", "/boom", func(http.ResponseWriter, *http.Request, map[string]string) {
		panic("secret state " + secret)
	}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(t.Context(), "GET", "/boom", nil)
	req.Header.Set("X-Request-ID", "boom-1")
	e.gw.ServeHTTP(rec, req)
	resp := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	checkError(t, resp, errorCase{httpStatus: 500, code: codes.Internal, reason: "INTERNAL", message: "internal error"})
	if strings.Contains(string(resp.body), "hunter2") {
		t.Errorf("panic value leaked: %s", resp.body)
	}
	var logged bool
	for _, rec := range e.logs.Lines(t) {
		if rec["request_id"] == "boom-1" && rec["panic"] != nil {
			logged = true
		}
	}
	if !logged {
		t.Error("panic not logged with the request id")
	}
}

// TestHead: HEAD is GET without the body on the gateway's own routes and
// the API's, as load balancers and uptime checks expect (RFC 9110); a watch
// is not held open for it.
func TestHead(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		path       string
		wantStatus int
	}{
		{"/healthz", http.StatusOK},
		{"/openapi.json", http.StatusOK},
		{"/v1/users/" + knownUserID, http.StatusOK},
		{"/v1/users/" + unknownID, http.StatusNotFound},
		{"/v1/orders/" + unknownID + ":watch", http.StatusMethodNotAllowed},
		// GetUser of the id "x:watch": a GET route, not a watch, whatever
		// its path ends with (answered 405 when the suffix decided).
		{"/v1/users/x:watch", http.StatusNotFound},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodHead, e.srv.URL+tt.path, nil)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus || len(body) != 0 {
			t.Errorf("HEAD %s: %d with %d bytes of body, want %d and none", tt.path, resp.StatusCode, len(body), tt.wantStatus)
		}
		if got := resp.Header.Get("Content-Type"); got == "" {
			t.Errorf("HEAD %s: no Content-Type", tt.path)
		}
		if tt.wantStatus == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodGet {
			t.Errorf("HEAD %s: Allow %q, want GET", tt.path, resp.Header.Get("Allow"))
		}
	}
}
