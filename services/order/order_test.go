package order_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/inventory"
	"github.com/duetkit/duet/services/order"
	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/grpchandler"
	"github.com/duetkit/duet/services/payment"
	paymentdomain "github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/simulator"
	"github.com/duetkit/duet/services/user"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// OpenTelemetry's process-wide worker is not ours.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		// database/sql's opener lives until its DB is closed, which for
		// some pools is after the test's last cleanup.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// quiet is the logger of every service under test.
var quiet = slog.New(slog.DiscardHandler)

// seen is what a downstream hop observed of one call: its deadline and
// request id.
type seen struct {
	deadline  time.Time
	requestID string
}

// recorder keeps the last observation per hop.
type recorder struct {
	mu   sync.Mutex
	hops map[string]seen
}

func (r *recorder) record(hop string, ctx context.Context) {
	d, _ := ctx.Deadline()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hops == nil {
		r.hops = map[string]seen{}
	}
	r.hops[hop] = seen{deadline: d, requestID: requestid.FromContext(ctx)}
}

func (r *recorder) get(hop string) seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hops[hop]
}

// provider is the payment simulator that can be made to fail temporarily
// a number of times, and records the contexts charges arrive with: the
// provider is the payment service's domain port, so this is what the
// payment handler saw.
type provider struct {
	rec   *recorder
	mu    sync.Mutex
	fails int
	calls int
}

func (p *provider) Charge(ctx context.Context, c paymentdomain.ProviderCharge) (paymentdomain.ProviderResult, error) {
	p.rec.record("payment", ctx)
	p.mu.Lock()
	p.calls++
	fail := p.fails > 0
	if fail {
		p.fails--
	}
	p.mu.Unlock()
	if fail {
		return paymentdomain.ProviderResult{}, paymentdomain.ErrProviderUnavailable
	}
	return simulator.Provider{}.Charge(ctx, c)
}

func (p *provider) Void(ctx context.Context, key string) error {
	return simulator.Provider{}.Void(ctx, key)
}

func (p *provider) Refund(ctx context.Context, r paymentdomain.ProviderRefund) error {
	return simulator.Provider{}.Refund(ctx, r)
}

// failNext makes the next n charges fail temporarily.
func (p *provider) failNext(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fails = n
}

func (p *provider) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// gate holds the user service's GetUser calls while closed, so that a saga
// can be caught at its first step.
type gate struct {
	mu      sync.Mutex
	open    chan struct{}
	entered chan struct{}
}

func newGate() *gate {
	g := &gate{open: make(chan struct{}), entered: make(chan struct{}, 100)}
	close(g.open)
	return g
}

// shut makes calls wait until release.
func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serverConfig is the kit/server configuration of the service name, with
// unary interceptors added closest to the handler.
func serverConfig(name string, unary ...grpc.UnaryServerInterceptor) server.Config {
	return server.Config{Name: name, Logger: quiet, UnaryInterceptors: unary, DrainTimeout: 5 * time.Second}
}

// serve runs register's services behind kit/server on a loopback port until
// closed or the test ends.
func serve(t *testing.T, name string, register func(grpc.ServiceRegistrar), unary ...grpc.UnaryServerInterceptor) *servertest.Server {
	t.Helper()
	return servertest.NewServer(t, serverConfig(name, unary...), register)
}

// dial connects the way an outside caller would: plain grpc, no retries,
// so the test sees every status as sent.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// peer connects the way a service does: kit/client, with quick retries and
// reconnects so that outages cost the test little time.
func peer(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := client.New(addr, client.Config{
		Retry: client.Retry{InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		Options: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// fastSaga retries quickly; tests that need a short step bound set it.
var fastSaga = order.SagaConfig{
	StepTimeout:    20 * time.Second,
	CallTimeout:    5 * time.Second,
	InitialBackoff: 5 * time.Millisecond,
	MaxBackoff:     50 * time.Millisecond,
}

// stack is user, payment, inventory and order, each on its own database
// and loopback port, talking real gRPC through kit/server and kit/client.
type stack struct {
	t         *testing.T
	users     userv1.UserServiceClient
	payments  paymentv1.PaymentServiceClient
	inventory inventoryv1.InventoryServiceClient
	orders    orderv1.OrderServiceClient
	provider  *provider
	rec       *recorder
	gate      *gate

	// inventoryHook, when set, runs in front of every inventory call.
	inventoryMu   sync.Mutex
	inventoryHook grpc.UnaryServerInterceptor

	paymentSvc    *payment.Service
	paymentServer *servertest.Server
	paymentsDB    *sqldb.DB
	// ordersDB reads the order service's database.
	ordersDB *sqldb.DB

	// orderCfg opens the order service again, on the same database.
	orderCfg    order.Config
	orderSvc    *order.Service
	orderServer *servertest.Server
}

func startStack(t *testing.T, dialect string, sagaCfg order.SagaConfig) *stack {
	t.Helper()
	ctx := t.Context()
	st := &stack{t: t, rec: &recorder{}, gate: newGate()}
	st.provider = &provider{rec: st.rec}

	userSvc, err := user.Open(ctx, user.Config{DatabaseURL: sqldbtest.URLs(t)[dialect], Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = userSvc.Close() })
	userServer := serve(t, "user", userSvc.Register, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == userv1.UserService_GetUser_FullMethodName {
			st.rec.record("user", ctx)
			if err := st.gate.wait(ctx); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	})

	inventorySvc, err := inventory.Open(ctx, inventory.Config{DatabaseURL: sqldbtest.URLs(t)[dialect], Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inventorySvc.Close() })
	inventoryServer := serve(t, "inventory", inventorySvc.Register, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		st.inventoryMu.Lock()
		hook := st.inventoryHook
		st.inventoryMu.Unlock()
		if hook != nil {
			return hook(ctx, req, info, h)
		}
		return h(ctx, req)
	})

	paymentURL := sqldbtest.URLs(t)[dialect]
	st.paymentSvc, err = payment.Open(ctx, payment.Config{DatabaseURL: paymentURL, Logger: quiet, Provider: st.provider})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.paymentSvc.Close() })
	st.paymentServer = serve(t, "payment", st.paymentSvc.Register)
	st.paymentsDB, err = sqldb.Open(ctx, paymentURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.paymentsDB.Close() })

	st.orderCfg = order.Config{
		DatabaseURL: sqldbtest.URLs(t)[dialect],
		Logger:      quiet,
		Users:       peer(t, userServer.Addr),
		Payments:    peer(t, st.paymentServer.Addr),
		Inventory:   peer(t, inventoryServer.Addr),
		Saga:        sagaCfg,
	}
	st.openOrders(t, st.orderCfg)
	st.ordersDB, err = sqldb.Open(ctx, st.orderCfg.DatabaseURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.ordersDB.Close() })

	st.users = userv1.NewUserServiceClient(dial(t, userServer.Addr))
	st.payments = paymentv1.NewPaymentServiceClient(dial(t, st.paymentServer.Addr))
	st.inventory = inventoryv1.NewInventoryServiceClient(dial(t, inventoryServer.Addr))
	return st
}

// openOrders opens an order service with cfg, serves it and points
// st.orders at it.
func (st *stack) openOrders(t *testing.T, cfg order.Config) {
	t.Helper()
	svc, err := order.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	st.orderSvc = svc
	st.orderServer = serve(t, "order", svc.Register)
	st.orders = orderv1.NewOrderServiceClient(dial(t, st.orderServer.Addr))
}

// crash stops the order service as a process exit would: it stops serving
// and stops its runner with steps in flight; nothing more is stored.
func (st *stack) crash(t *testing.T) {
	t.Helper()
	st.orderServer.Close()
	if err := st.orderSvc.Close(); err != nil {
		t.Fatal(err)
	}
}

// stopPayments takes the payment service off the network; startPayments
// puts it back on the same address.
func (st *stack) stopPayments() { st.paymentServer.Close() }

func (st *stack) startPayments(t *testing.T) {
	t.Helper()
	addr := st.paymentServer.Addr
	for deadline := time.Now().Add(5 * time.Second); ; {
		// The port was just freed; the listen normally succeeds at once.
		lis, err := net.Listen("tcp", addr)
		if err == nil {
			st.paymentServer = servertest.Serve(t, lis, serverConfig("payment"), st.paymentSvc.Register)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen on %s again: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eachStack runs fn against a stack per available database dialect.
func eachStack(t *testing.T, sagaCfg order.SagaConfig, fn func(t *testing.T, st *stack)) {
	for dialect := range sqldbtest.URLs(t) {
		t.Run(dialect, func(t *testing.T) { fn(t, startStack(t, dialect, sagaCfg)) })
	}
}

func (st *stack) newUser(t *testing.T) string {
	t.Helper()
	resp, err := st.users.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: uuid.NewString() + "@example.com", Name: "Customer"})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return resp.GetUser().GetId()
}

// newProduct creates a product priced in USD with stock units and returns
// its sku.
func (st *stack) newProduct(t *testing.T, units, stock int64) string {
	t.Helper()
	sku := "SKU-" + uuid.NewString()[:8]
	_, err := st.inventory.CreateProduct(t.Context(), &inventoryv1.CreateProductRequest{Sku: sku, Name: "Product " + sku, Price: usd(units), Stock: stock})
	if err != nil {
		t.Fatalf("CreateProduct: %v", err)
	}
	return sku
}

// stock returns a product's available and reserved units.
func (st *stack) stock(t *testing.T, sku string) (available, reserved int64) {
	t.Helper()
	resp, err := st.inventory.GetProduct(t.Context(), &inventoryv1.GetProductRequest{Sku: sku})
	if err != nil {
		t.Fatalf("GetProduct: %v", err)
	}
	return resp.GetProduct().GetAvailable(), resp.GetProduct().GetReserved()
}

// charge is a payment row as the payment service stored it.
type charge struct {
	id, status  string
	amount      int64
	refunded    int64
	pending     int64 // of refunded, what the provider has not confirmed
	reference   string
	userID      string
	idempotency string
}

// paymentKey returns the order's payment idempotency key, secret part
// and all, as the saga charges with it.
func (st *stack) paymentKey(t *testing.T, orderID string) string {
	t.Helper()
	o := domain.Order{ID: orderID}
	if err := st.ordersDB.QueryRowContext(t.Context(), st.ordersDB.Rebind(`SELECT charge_secret FROM orders WHERE id = ?`), orderID).Scan(&o.ChargeSecret); err != nil {
		t.Fatal(err)
	}
	return domain.PaymentKey(&o)
}

// charges returns the payments made under the order's payment key.
func (st *stack) charges(t *testing.T, orderID string) []charge {
	t.Helper()
	rows, err := st.paymentsDB.QueryContext(t.Context(), st.paymentsDB.Rebind(`SELECT id, status, amount_units,
		refunded_units, refund_pending_units, reference, user_id, idempotency_key FROM payments WHERE idempotency_key = ?`), st.paymentKey(t, orderID))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []charge
	for rows.Next() {
		var c charge
		if err := rows.Scan(&c.id, &c.status, &c.amount, &c.refunded, &c.pending, &c.reference, &c.userID, &c.idempotency); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// paymentCount counts every payment the payment service recorded.
func (st *stack) paymentCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := st.paymentsDB.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM payments").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// captured counts the money held under an order's payment key: the
// captured amount not refunded, or refunded and not yet returned by the
// provider.
func (st *stack) captured(t *testing.T, orderID string) int64 {
	t.Helper()
	var held int64
	for _, c := range st.charges(t, orderID) {
		if c.status != "DECLINED" {
			held += c.amount - c.refunded + c.pending
		}
	}
	return held
}

// place creates req's order without waiting for its saga (Wait false),
// failing the test when the call fails.
func (st *stack) place(t *testing.T, req *orderv1.CreateOrderRequest) *orderv1.CreateOrderResponse {
	t.Helper()
	req.Wait = false
	resp, err := st.orders.CreateOrder(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// await polls the order until it is terminal and returns it.
func (st *stack) await(t *testing.T, id string) *orderv1.Order {
	t.Helper()
	return st.awaitFunc(t, id, func(o *orderv1.Order) bool { return o.GetStep() == orderv1.OrderStep_ORDER_STEP_DONE })
}

// awaitFunc polls the order until done says so and returns it.
func (st *stack) awaitFunc(t *testing.T, id string, done func(*orderv1.Order) bool) *orderv1.Order {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := st.orders.GetOrder(t.Context(), &orderv1.GetOrderRequest{Id: id})
		if err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
		if done(resp.GetOrder()) {
			return resp.GetOrder()
		}
		if time.Now().After(deadline) {
			t.Fatalf("order still %v after 30s", resp.GetOrder())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func usd(units int64) *typev1.Money { return &typev1.Money{CurrencyCode: "USD", Units: units} }

// line is one item of an order request, without a price.
func line(sku string, qty int32) *orderv1.LineItem {
	return &orderv1.LineItem{Sku: sku, Quantity: qty}
}

func createReq(userID, token, key string, items ...*orderv1.LineItem) *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{UserId: userID, Items: items, PaymentToken: token, IdempotencyKey: key, Wait: true}
}

func TestCreateOrderRejectsBadRequests(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, 100, 10)
		priced := func(currency string, units int64) *orderv1.LineItem {
			return &orderv1.LineItem{Sku: sku, Quantity: 1, UnitPrice: &typev1.Money{CurrencyCode: currency, Units: units}}
		}
		other := &orderv1.LineItem{Sku: "OTHER", Quantity: 1, UnitPrice: &typev1.Money{CurrencyCode: "EUR", Units: 1}}
		tests := []struct {
			name       string
			req        *orderv1.CreateOrderRequest
			wantCode   codes.Code
			wantReason string
			wantField  string
		}{
			{"mixed currencies", createReq(userID, "tok_approve", "mixed", priced("USD", 100), other), codes.InvalidArgument, "CURRENCY_MISMATCH", "items[1].unit_price.currency_code"},
			{"bad currency", createReq(userID, "tok_approve", "bad-cur", priced("usd", 100)), codes.InvalidArgument, "INVALID_ARGUMENT", "items[0].unit_price.currency_code"},
			{"negative price", createReq(userID, "tok_approve", "neg", priced("USD", -1)), codes.InvalidArgument, "INVALID_ARGUMENT", "items[0].unit_price.units"},
			{"sku twice", createReq(userID, "tok_approve", "twice", line(sku, 1), line(sku, 2)), codes.InvalidArgument, "INVALID_ARGUMENT", "items[1].sku"},
			{"malformed user id", createReq("not-a-uuid", "tok_approve", "bad-id", line(sku, 1)), codes.InvalidArgument, "INVALID_ARGUMENT", "user_id"},
			{"no items", createReq(userID, "tok_approve", "none"), codes.InvalidArgument, "INVALID_ARGUMENT", "items"},
			{"no idempotency key", createReq(userID, "tok_approve", "", line(sku, 1)), codes.InvalidArgument, "INVALID_ARGUMENT", "idempotency_key"},
			{"no payment token", createReq(userID, "", "no-token", line(sku, 1)), codes.InvalidArgument, "INVALID_ARGUMENT", "payment_token"},
			// PostgreSQL cannot store a NUL in TEXT: refused up front on
			// every database alike.
			{"NUL in the idempotency key", createReq(userID, "tok_approve", "k\x00z", line(sku, 1)), codes.InvalidArgument, "INVALID_ARGUMENT", "idempotency_key"},
			{"NUL in the payment token", createReq(userID, "tok_approve\x00", "nul-token", line(sku, 1)), codes.InvalidArgument, "INVALID_ARGUMENT", "payment_token"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := st.orders.CreateOrder(t.Context(), tt.req)
				apierrtest.Check(t, err, tt.wantCode, tt.wantReason, tt.wantField)
			})
		}
		// Nothing was stored, reserved or charged for any of them.
		list, err := st.orders.ListOrders(t.Context(), &orderv1.ListOrdersRequest{UserId: userID})
		if err != nil || len(list.GetOrders()) != 0 {
			t.Fatalf("ListOrders = %v, %v; want none", list, err)
		}
		if avail, held := st.stock(t, sku); avail != 10 || held != 0 {
			t.Fatalf("stock %d available, %d reserved; want 10, 0", avail, held)
		}
		if n := st.paymentCount(t); n != 0 {
			t.Fatalf("%d payments recorded, want 0", n)
		}
	})
}

func TestCreateOrderIdempotency(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		ctx := t.Context()
		userID := st.newUser(t)
		sku := st.newProduct(t, 250, 100)
		req := createReq(userID, "tok_approve", "idem-1", line(sku, 2))
		first, err := st.orders.CreateOrder(ctx, req)
		if err != nil || first.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
			t.Fatalf("CreateOrder = %v, %v", first, err)
		}
		for _, wait := range []bool{true, false} {
			req.Wait = wait // wait is how to answer, not part of the request's identity
			again, err := st.orders.CreateOrder(ctx, req)
			if err != nil || again.GetOrder().GetId() != first.GetOrder().GetId() ||
				again.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED ||
				again.GetOrder().GetPaymentId() != first.GetOrder().GetPaymentId() {
				t.Fatalf("repeat (wait %v) = %v, %v; want order %s", wait, again, err, first.GetOrder().GetId())
			}
		}
		if n := st.paymentCount(t); n != 1 {
			t.Fatalf("%d payments, want 1", n)
		}
		if avail, _ := st.stock(t, sku); avail != 98 {
			t.Fatalf("%d available, want 98: the repeats reserved again", avail)
		}

		other := createReq(userID, "tok_approve", "idem-1", line(sku, 3))
		_, err = st.orders.CreateOrder(ctx, other)
		apierrtest.Check(t, err, codes.FailedPrecondition, "IDEMPOTENCY_KEY_REUSED", "")

		// Racing duplicates create one order, one reservation, one payment.
		race := createReq(userID, "tok_approve", "idem-race", line(sku, 1))
		race.Wait = false
		const n = 6
		ids := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				resp, err := st.orders.CreateOrder(ctx, race)
				ids[i], errs[i] = resp.GetOrder().GetId(), err
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("racer %d: order %q, %v; want order %q", i, ids[i], errs[i], ids[0])
			}
		}
		if o := st.await(t, ids[0]); o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
			t.Fatalf("raced order ended %v", o)
		}
		list, err := st.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{UserId: userID})
		if err != nil || len(list.GetOrders()) != 2 {
			t.Fatalf("ListOrders = %d orders, %v; want 2", len(list.GetOrders()), err)
		}
		if n := st.paymentCount(t); n != 2 {
			t.Fatalf("%d payments, want 2", n)
		}
		if avail, held := st.stock(t, sku); avail != 97 || held != 0 {
			t.Fatalf("stock %d available, %d reserved; want 97, 0", avail, held)
		}
	})
}

func TestCreateOrderWithoutWaitReturnsPending(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, 500, 5)
		// Hold the saga at its first step so the answer cannot race it.
		st.gate.shut()
		resp := st.place(t, createReq(userID, "tok_approve", "no-wait", line(sku, 1)))
		o := resp.GetOrder()
		if o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING || o.GetStep() != orderv1.OrderStep_ORDER_STEP_CHECK_USER ||
			o.GetTotal() != nil || o.GetItems()[0].GetUnitPrice() != nil || o.GetPaymentId() != "" {
			t.Fatalf("CreateOrder without wait = %v; want PENDING at CHECK_USER, unpriced", o)
		}
		st.gate.release()
		if done := st.await(t, o.GetId()); done.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED || done.GetTotal().GetUnits() != 500 {
			t.Fatalf("order ended %v", done)
		}
	})
}

func TestCreateOrderWaitEndsAtDeadline(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, 500, 5)
		st.gate.shut()
		defer st.gate.release()
		// The wait ends a tenth of the time left early: 300 ms to answer
		// in, which a loaded machine under -race needs (50 ms was not).
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		resp, err := st.orders.CreateOrder(ctx, createReq(userID, "tok_approve", "slow", line(sku, 1)))
		if err != nil || resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
			t.Fatalf("CreateOrder waiting past its deadline = %v, %v; want the order PENDING, answered in time", resp, err)
		}
	})
}

// TestPaymentKeyCannotBeTaken: the payment API is open to other callers,
// and an order's payment key was "order-" + its id, which its client sees
// at once. Charging under that key first made the saga's own charge
// IDEMPOTENCY_KEY_REUSED: the order was cancelled, and its compensation
// refunded the other caller's payment (or, with the same request, the
// order was confirmed against a payment it did not make). The key now
// carries a secret of the order's.
func TestPaymentKeyCannotBeTaken(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, 500, 5)
		st.gate.shut()
		resp := st.place(t, createReq(userID, "tok_approve", "taken-key", line(sku, 1)))
		id := resp.GetOrder().GetId()
		within(t, st.gate.entered, "the saga at the gate")
		other, err := st.payments.Charge(t.Context(), &paymentv1.ChargeRequest{Amount: usd(1), PaymentMethodToken: "tok_approve",
			IdempotencyKey: "order-" + id, Reference: "someone else's"})
		if err != nil {
			t.Fatal(err)
		}
		st.gate.release()
		o := st.await(t, id)
		if o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED || o.GetPaymentId() == other.GetPayment().GetId() {
			t.Fatalf("order ended %v %q with payment %s; want CONFIRMED with a payment of its own, not %s",
				o.GetStatus(), o.GetFailureReason(), o.GetPaymentId(), other.GetPayment().GetId())
		}
		got, err := st.payments.GetPayment(t.Context(), &paymentv1.GetPaymentRequest{Id: other.GetPayment().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
			t.Errorf("the other caller's payment is %v, want it CAPTURED, untouched", got.GetPayment().GetStatus())
		}
	})
}

// TestCreateOrderOverloaded: with MaxBacklog orders in progress (here
// held at their first peer), a new order is refused with UNAVAILABLE,
// ORDERS_OVERLOADED and a retry delay, and nothing is stored; a repeat of
// an order placed is still answered; once sagas finish, orders are taken
// again. Without the bound they queued in memory without end.
func TestCreateOrderOverloaded(t *testing.T) {
	small := fastSaga
	small.MaxBacklog = 2
	eachStack(t, small, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, 500, 10)
		st.gate.shut()
		var placed []*orderv1.Order
		for i := range 2 {
			resp := st.place(t, createReq(userID, "tok_approve", fmt.Sprint("held-", i), line(sku, 1)))
			placed = append(placed, resp.GetOrder())
		}
		refused := createReq(userID, "tok_approve", "one-too-many", line(sku, 1))
		refused.Wait = false
		_, err := st.orders.CreateOrder(t.Context(), refused)
		apierrtest.Check(t, err, codes.Unavailable, "ORDERS_OVERLOADED", "")
		if d, ok := apierr.RetryDelay(err); !ok || d <= 0 {
			t.Errorf("no retry delay: %v", err)
		}
		repeat := createReq(userID, "tok_approve", "held-0", line(sku, 1))
		repeat.Wait = false
		if resp, err := st.orders.CreateOrder(t.Context(), repeat); err != nil || resp.GetOrder().GetId() != placed[0].GetId() {
			t.Errorf("repeat while overloaded = %v, %v; want the order placed", resp, err)
		}

		st.gate.release()
		for _, o := range placed {
			if done := st.await(t, o.GetId()); done.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
				t.Fatalf("held order ended %v", done.GetStatus())
			}
		}
		// The runner lets go of an order once its saga is done, just after
		// the change that ended it is seen: the refused order may need a
		// moment to be taken.
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := st.orders.CreateOrder(t.Context(), refused)
			if err == nil {
				if resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
					t.Fatalf("order taken after the backlog = %v", resp.GetOrder().GetStatus())
				}
				break
			}
			if apierr.Reason(err) != "ORDERS_OVERLOADED" || time.Now().After(deadline) {
				t.Fatalf("order after the backlog cleared = %v", err)
			}
			time.Sleep(10 * time.Millisecond) // polling for the runner to let go, bounded above
		}
	})
}

func TestPropagation(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, 100, 5)
		ctx := metadata.AppendToOutgoingContext(t.Context(), requestid.Header, "req-propagation-42")
		start := time.Now()
		if _, err := st.orders.CreateOrder(ctx, createReq(userID, "tok_approve", "prop-1", line(sku, 1))); err != nil {
			t.Fatal(err)
		}
		for _, hop := range []string{"user", "payment"} {
			got := st.rec.get(hop)
			if got.requestID != "req-propagation-42" {
				t.Errorf("%s hop saw request id %q, want the one the order was created with", hop, got.requestID)
			}
			// The saga bounds each call by its CallTimeout. (grpc-timeout is
			// sent in coarse units, hence the slack.)
			if got.deadline.IsZero() || got.deadline.After(start.Add(fastSaga.CallTimeout+time.Second)) {
				t.Errorf("%s hop saw deadline %v, want one within the saga's call timeout", hop, got.deadline)
			}
		}
	})
}

func TestGetAndListOrders(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		ctx := t.Context()
		alice, bob := st.newUser(t), st.newUser(t)
		sku := st.newProduct(t, 100, 100)
		var want []string
		for i := range 5 {
			resp, err := st.orders.CreateOrder(ctx, createReq(alice, "tok_approve", fmt.Sprint("list-", i), line(sku, 1)))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, resp.GetOrder().GetId())
		}
		if _, err := st.orders.CreateOrder(ctx, createReq(bob, "tok_approve", "list-bob", line(sku, 1))); err != nil {
			t.Fatal(err)
		}

		got, err := st.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: want[0]})
		if err != nil || got.GetOrder().GetId() != want[0] || got.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
			t.Fatalf("GetOrder = %v, %v", got, err)
		}
		_, err = st.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: uuid.NewString()})
		apierrtest.Check(t, err, codes.NotFound, "ORDER_NOT_FOUND", "")
		_, err = st.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: "nope"})
		apierrtest.Check(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "id")

		for _, size := range []int32{0, 1, 2, 5, 100} {
			t.Run(fmt.Sprint("page size ", size), func(t *testing.T) {
				var got []string
				token := ""
				for range 10 {
					resp, err := st.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{UserId: alice, PageSize: size, PageToken: token})
					if err != nil {
						t.Fatal(err)
					}
					for _, o := range resp.GetOrders() {
						got = append(got, o.GetId())
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("listed %v, want %v (oldest first)", got, want)
				}
			})
		}

		first, err := st.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{UserId: alice, PageSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			req   *orderv1.ListOrdersRequest
			field string
		}{
			{"garbage token", &orderv1.ListOrdersRequest{UserId: alice, PageToken: "garbage"}, "page_token"},
			{"another user's token", &orderv1.ListOrdersRequest{UserId: bob, PageToken: first.GetNextPageToken()}, "page_token"},
			{"page size too large", &orderv1.ListOrdersRequest{UserId: alice, PageSize: 101}, "page_size"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := st.orders.ListOrders(ctx, tt.req)
				apierrtest.Check(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", tt.field)
			})
		}
	})
}

func TestOpenChecksConfig(t *testing.T) {
	url := sqldbtest.URLs(t)["sqlite"]
	conn := dial(t, "127.0.0.1:1")
	tests := []struct {
		name string
		cfg  order.Config
	}{
		{"no database", order.Config{Users: conn, Payments: conn, Inventory: conn}},
		{"no peers", order.Config{DatabaseURL: url}},
		{"no inventory", order.Config{DatabaseURL: url, Users: conn, Payments: conn}},
		{"negative step timeout", order.Config{DatabaseURL: url, Users: conn, Payments: conn, Inventory: conn, Saga: order.SagaConfig{StepTimeout: -time.Second}}},
		{"negative workers", order.Config{DatabaseURL: url, Users: conn, Payments: conn, Inventory: conn, Saga: order.SagaConfig{Workers: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if svc, err := order.Open(t.Context(), tt.cfg); err == nil {
				_ = svc.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

// recvAll reads a WatchOrder stream to its end.
func recvAll(stream grpc.ServerStreamingClient[orderv1.WatchOrderResponse]) ([]*orderv1.Order, error) {
	var out []*orderv1.Order
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, resp.GetOrder())
	}
}

// outboxSubjects returns the subjects of the order service's outbox rows
// for an order.
func outboxSubjects(t *testing.T, db *sql.DB, rebind func(string) string, orderID string) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), rebind(`SELECT subject FROM events_outbox WHERE aggregate_id = ?`), orderID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestDrainAnswersWaitingCreateOrder: Drain answers at once a CreateOrder
// that waits on a saga held up by a peer, with the order PENDING, rather
// than letting it hold the server's graceful stop to its bound.
func TestDrainAnswersWaitingCreateOrder(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, 500, 5)
		st.gate.shut()
		defer st.gate.release()
		type answer struct {
			resp *orderv1.CreateOrderResponse
			err  error
		}
		answered := make(chan answer, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			resp, err := st.orders.CreateOrder(ctx, createReq(userID, "tok_approve", "drain-wait", line(sku, 1)))
			answered <- answer{resp, err}
		}()
		within(t, st.gate.entered, "the saga at the gate") // the saga waits at its first peer, and the call with it
		st.orderSvc.Drain()
		select {
		case a := <-answered:
			if a.err != nil || a.resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
				t.Errorf("waiting CreateOrder after Drain = %v, %v; want the order PENDING", a.resp.GetOrder(), a.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the waiting CreateOrder was not answered after Drain")
		}
	})
}

// TestWatchesPerOrderBounded: each WatchOrder holds a goroutine and reads
// its order every PollInterval until the order is terminal; a client
// opening watches in a loop on an order held up by a peer grew that cost
// without end. Past MaxWatchesPerOrder an order's watch is refused; another
// order's is served, and closing one makes room.
func TestWatchesPerOrderBounded(t *testing.T) {
	// The orders stay PENDING, so their watches stay open, for as long
	// as the test takes: no step gives up on the held call.
	held := fastSaga
	held.StepTimeout, held.CallTimeout = 10*time.Minute, 10*time.Minute
	st := startStack(t, "sqlite", held)
	userID := st.newUser(t)
	sku := st.newProduct(t, 500, 5)
	st.gate.shut()
	defer st.gate.release()
	pending := st.place(t, createReq(userID, "tok_approve", "held", line(sku, 1))).GetOrder().GetId()
	other := st.place(t, createReq(userID, "tok_approve", "other", line(sku, 1))).GetOrder().GetId()

	watch := func(ctx context.Context, id string) (grpc.ServerStreamingClient[orderv1.WatchOrderResponse], error) {
		stream, err := st.orders.WatchOrder(ctx, &orderv1.WatchOrderRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		// The first state is sent once the server has counted the watch.
		_, err = stream.Recv()
		return stream, err
	}
	closers := make([]context.CancelFunc, 0, grpchandler.MaxWatchesPerOrder)
	for range grpchandler.MaxWatchesPerOrder {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		if _, err := watch(ctx, pending); err != nil {
			t.Fatalf("watch within the bound: %v", err)
		}
		closers = append(closers, cancel)
	}
	_, err := watch(t.Context(), pending)
	if apierr.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != grpchandler.ReasonTooManyWatches {
		t.Fatalf("watch past the bound: %v, want RESOURCE_EXHAUSTED %s", err, grpchandler.ReasonTooManyWatches)
	}
	if _, err := watch(t.Context(), other); err != nil {
		t.Fatalf("another order's watch: %v", err)
	}

	// One closed makes room, once its stream has ended on the server.
	closers[0]()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := watch(t.Context(), pending)
		if err == nil {
			return
		}
		if apierr.Reason(err) != grpchandler.ReasonTooManyWatches || time.Now().After(deadline) {
			t.Fatalf("watch after one closed: %v", err)
		}
		time.Sleep(5 * time.Millisecond) // the closed one's stream is still ending
	}
}
