package order_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/order"
	"github.com/duetkit/duet/services/payment"
	paymentdomain "github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/simulator"
	"github.com/duetkit/duet/services/user"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// OpenTelemetry's process-wide worker is not ours.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

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

// provider is the payment simulator with a switch that takes it down, and
// a recorder of the contexts charges arrive with: the provider is the
// payment service's domain port, so this is what the payment handler saw.
type provider struct {
	rec   *recorder
	mu    sync.Mutex
	down  bool
	calls int
}

func (p *provider) Charge(ctx context.Context, c paymentdomain.ProviderCharge) (paymentdomain.ProviderResult, error) {
	p.rec.record("payment", ctx)
	p.mu.Lock()
	p.calls++
	down := p.down
	p.mu.Unlock()
	if down {
		return paymentdomain.ProviderResult{}, paymentdomain.ErrProviderUnavailable
	}
	return simulator.Provider{}.Charge(ctx, c)
}

func (p *provider) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// stack is user, payment and order, each on its own database and loopback
// port, talking real gRPC through kit/server and kit/client.
type stack struct {
	users      userv1.UserServiceClient
	orders     orderv1.OrderServiceClient
	payments   paymentv1.PaymentServiceClient
	provider   *provider
	rec        *recorder
	paymentsDB *sqldb.DB
}

// serve runs register's services behind kit/server on 127.0.0.1:0 until
// the test ends and returns the address.
func serve(t *testing.T, name string, register func(grpc.ServiceRegistrar), interceptors ...grpc.UnaryServerInterceptor) string {
	t.Helper()
	srv, err := server.New(server.Config{Name: name, Logger: slog.New(slog.DiscardHandler), UnaryInterceptors: interceptors})
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
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("%s: Serve: %v", name, err)
		}
	})
	return lis.Addr().String()
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

// peer connects the way a service does: kit/client, with quick retries so
// a payment outage costs the test little time.
func peer(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := client.New(addr, client.Config{Retry: client.Retry{InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func startStack(t *testing.T, dialect string) *stack {
	t.Helper()
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	st := &stack{rec: &recorder{}}
	st.provider = &provider{rec: st.rec}

	userSvc, err := user.Open(ctx, user.Config{DatabaseURL: sqldbtest.URLs(t)[dialect], Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = userSvc.Close() })
	userAddr := serve(t, "user", userSvc.Register, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == userv1.UserService_GetUser_FullMethodName {
			st.rec.record("user", ctx)
		}
		return h(ctx, req)
	})

	paymentURL := sqldbtest.URLs(t)[dialect]
	paymentSvc, err := payment.Open(ctx, payment.Config{DatabaseURL: paymentURL, Logger: logger, Provider: st.provider})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = paymentSvc.Close() })
	paymentAddr := serve(t, "payment", paymentSvc.Register)
	st.paymentsDB, err = sqldb.Open(ctx, paymentURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.paymentsDB.Close() })

	orderSvc, err := order.Open(ctx, order.Config{
		DatabaseURL: sqldbtest.URLs(t)[dialect],
		Logger:      logger,
		Users:       peer(t, userAddr),
		Payments:    peer(t, paymentAddr),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = orderSvc.Close() })
	orderAddr := serve(t, "order", orderSvc.Register)

	st.users = userv1.NewUserServiceClient(dial(t, userAddr))
	st.payments = paymentv1.NewPaymentServiceClient(dial(t, paymentAddr))
	st.orders = orderv1.NewOrderServiceClient(dial(t, orderAddr))
	return st
}

// eachStack runs fn against a stack per available database dialect.
func eachStack(t *testing.T, fn func(t *testing.T, st *stack)) {
	for dialect := range sqldbtest.URLs(t) {
		t.Run(dialect, func(t *testing.T) { fn(t, startStack(t, dialect)) })
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

// paymentCount counts the payments recorded by the payment service.
func (st *stack) paymentCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := st.paymentsDB.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM payments").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func usd(units int64) *typev1.Money { return &typev1.Money{CurrencyCode: "USD", Units: units} }

func createReq(userID, token, key string) *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		UserId: userID,
		Items: []*orderv1.LineItem{
			{Sku: "MUG-1", Quantity: 2, UnitPrice: usd(1250)},
			{Sku: "TEE-2", Quantity: 1, UnitPrice: usd(1999)},
		},
		PaymentToken:   token,
		IdempotencyKey: key,
	}
}

// wantStatus checks err's code, reason and, when given, offending field.
func wantStatus(t *testing.T, err error, code codes.Code, reason, field string) {
	t.Helper()
	if apierr.Code(err) != code || apierr.Reason(err) != reason {
		t.Fatalf("error %v; want code %s reason %s", err, code, reason)
	}
	if field == "" {
		return
	}
	for _, v := range apierr.FieldViolations(err) {
		if v.Field == field {
			return
		}
	}
	t.Fatalf("error %v does not name field %s (has %v)", err, field, apierr.FieldViolations(err))
}

func TestCreateOrderOutcomes(t *testing.T) {
	eachStack(t, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		tests := []struct {
			token       string
			wantStatus  orderv1.OrderStatus
			wantReason  string
			wantPayment paymentv1.PaymentStatus
		}{
			{"tok_approve", orderv1.OrderStatus_ORDER_STATUS_PAID, "", paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED},
			{"tok_decline", orderv1.OrderStatus_ORDER_STATUS_PAYMENT_FAILED, "PAYMENT_DECLINED", paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED},
			{"tok_insufficient", orderv1.OrderStatus_ORDER_STATUS_PAYMENT_FAILED, "INSUFFICIENT_FUNDS", paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED},
		}
		for _, tt := range tests {
			t.Run(tt.token, func(t *testing.T) {
				ctx := t.Context()
				resp, err := st.orders.CreateOrder(ctx, createReq(userID, tt.token, "outcome-"+tt.token))
				if err != nil {
					t.Fatalf("CreateOrder: %v", err)
				}
				o := resp.GetOrder()
				if o.GetStatus() != tt.wantStatus || o.GetFailureReason() != tt.wantReason || o.GetTotal().GetUnits() != 4499 ||
					o.GetTotal().GetCurrencyCode() != "USD" || o.GetUserId() != userID || len(o.GetItems()) != 2 || o.GetPaymentId() == "" {
					t.Fatalf("CreateOrder = %v", o)
				}
				got, err := st.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: o.GetId()})
				if err != nil || got.GetOrder().GetStatus() != tt.wantStatus || got.GetOrder().GetPaymentId() != o.GetPaymentId() {
					t.Fatalf("GetOrder = %v, %v", got, err)
				}
				p, err := st.payments.GetPayment(ctx, &paymentv1.GetPaymentRequest{Id: o.GetPaymentId()})
				if err != nil {
					t.Fatalf("GetPayment: %v", err)
				}
				if p.GetPayment().GetStatus() != tt.wantPayment || p.GetPayment().GetReference() != o.GetId() ||
					p.GetPayment().GetIdempotencyKey() != "order-"+o.GetId() || p.GetPayment().GetAmount().GetUnits() != 4499 {
					t.Fatalf("payment %v for order %s", p.GetPayment(), o.GetId())
				}
			})
		}
	})
}

func TestCreateOrderRejects(t *testing.T) {
	eachStack(t, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		missing := uuid.NewString()
		mixed := createReq(userID, "tok_approve", "mixed")
		mixed.Items[1].UnitPrice.CurrencyCode = "EUR"
		noItems := createReq(userID, "tok_approve", "none")
		noItems.Items = nil
		tests := []struct {
			name       string
			req        *orderv1.CreateOrderRequest
			wantCode   codes.Code
			wantReason string
			wantField  string
		}{
			{"unknown user", createReq(missing, "tok_approve", "ghost"), codes.FailedPrecondition, "USER_NOT_FOUND", "user_id"},
			{"unknown token", createReq(userID, "tok_bogus", "bogus"), codes.InvalidArgument, "INVALID_ARGUMENT", "payment_token"},
			{"mixed currencies", mixed, codes.InvalidArgument, "CURRENCY_MISMATCH", "items[1].unit_price.currency_code"},
			{"malformed user id", createReq("not-a-uuid", "tok_approve", "bad-id"), codes.InvalidArgument, "INVALID_ARGUMENT", "user_id"},
			{"no items", noItems, codes.InvalidArgument, "INVALID_ARGUMENT", "items"},
			{"no idempotency key", createReq(userID, "tok_approve", ""), codes.InvalidArgument, "INVALID_ARGUMENT", "idempotency_key"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := st.orders.CreateOrder(t.Context(), tt.req)
				wantStatus(t, err, tt.wantCode, tt.wantReason, tt.wantField)
			})
		}
		// The unknown user's error names the user as a failed precondition.
		_, err := st.orders.CreateOrder(t.Context(), createReq(missing, "tok_approve", "ghost"))
		var pf *errdetails.PreconditionFailure
		for _, d := range status.Convert(err).Details() {
			if v, ok := d.(*errdetails.PreconditionFailure); ok {
				pf = v
			}
		}
		if len(pf.GetViolations()) != 1 || pf.GetViolations()[0].GetType() != "USER" || pf.GetViolations()[0].GetSubject() != "users/"+missing {
			t.Fatalf("precondition failure %v, want USER users/%s", pf, missing)
		}
		// Nothing was stored or charged for any of them.
		list, err := st.orders.ListOrders(t.Context(), &orderv1.ListOrdersRequest{UserId: userID})
		if err != nil || len(list.GetOrders()) != 0 {
			t.Fatalf("ListOrders = %v, %v; want none", list, err)
		}
		if n := st.paymentCount(t); n != 0 {
			t.Fatalf("%d payments recorded, want 0", n)
		}
	})
}

func TestCreateOrderIdempotency(t *testing.T) {
	eachStack(t, func(t *testing.T, st *stack) {
		ctx := t.Context()
		userID := st.newUser(t)
		req := createReq(userID, "tok_approve", "idem-1")
		first, err := st.orders.CreateOrder(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := st.orders.CreateOrder(ctx, req)
		if err != nil || again.GetOrder().GetId() != first.GetOrder().GetId() || again.GetOrder().GetPaymentId() != first.GetOrder().GetPaymentId() {
			t.Fatalf("repeat = %v, %v; want order %s", again, err, first.GetOrder().GetId())
		}
		if n := st.paymentCount(t); n != 1 {
			t.Fatalf("%d payments, want 1", n)
		}

		other := createReq(userID, "tok_approve", "idem-1")
		other.Items[0].Quantity = 3
		_, err = st.orders.CreateOrder(ctx, other)
		wantStatus(t, err, codes.FailedPrecondition, "IDEMPOTENCY_KEY_REUSED", "")

		// Racing duplicates create one order and one payment.
		race := createReq(userID, "tok_approve", "idem-race")
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
		list, err := st.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{UserId: userID})
		if err != nil || len(list.GetOrders()) != 2 {
			t.Fatalf("ListOrders = %d orders, %v; want 2", len(list.GetOrders()), err)
		}
		if n := st.paymentCount(t); n != 2 {
			t.Fatalf("%d payments, want 2", n)
		}
	})
}

func TestCreateOrderPaymentUnavailable(t *testing.T) {
	eachStack(t, func(t *testing.T, st *stack) {
		ctx := t.Context()
		userID := st.newUser(t)

		// tok_unavailable always fails: UNAVAILABLE with RetryInfo, order PENDING.
		_, err := st.orders.CreateOrder(ctx, createReq(userID, "tok_unavailable", "down-1"))
		wantStatus(t, err, codes.Unavailable, "PAYMENT_UNAVAILABLE", "")
		if d, ok := apierr.RetryDelay(err); !ok || d <= 0 {
			t.Fatalf("no RetryInfo in %v", err)
		}

		// A provider outage, then recovery: the retry completes the same order.
		req := createReq(userID, "tok_approve", "down-2")
		st.provider.setDown(true)
		_, err = st.orders.CreateOrder(ctx, req)
		wantStatus(t, err, codes.Unavailable, "PAYMENT_UNAVAILABLE", "")
		list, err := st.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{UserId: userID})
		if err != nil || len(list.GetOrders()) != 2 {
			t.Fatalf("ListOrders = %v, %v; want the two pending orders", list, err)
		}
		var pendingID string
		for _, o := range list.GetOrders() {
			if o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING || o.GetPaymentId() != "" {
				t.Fatalf("order after an outage: %v", o)
			}
			if o.GetIdempotencyKey() == "down-2" {
				pendingID = o.GetId()
			}
		}
		if n := st.paymentCount(t); n != 0 {
			t.Fatalf("%d payments recorded during the outage, want 0", n)
		}

		st.provider.setDown(false)
		resp, err := st.orders.CreateOrder(ctx, req)
		if err != nil || resp.GetOrder().GetId() != pendingID || resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID {
			t.Fatalf("retry = %v, %v; want order %s PAID", resp, err, pendingID)
		}
		again, err := st.orders.CreateOrder(ctx, req)
		if err != nil || again.GetOrder().GetId() != pendingID {
			t.Fatalf("second retry = %v, %v", again, err)
		}
		if n := st.paymentCount(t); n != 1 {
			t.Fatalf("%d payments, want exactly 1", n)
		}
	})
}

func TestPropagation(t *testing.T) {
	eachStack(t, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		const timeout = 7 * time.Second
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, requestid.Header, "req-propagation-42")
		if _, err := st.orders.CreateOrder(ctx, createReq(userID, "tok_approve", "prop-1")); err != nil {
			t.Fatal(err)
		}
		for _, hop := range []string{"user", "payment"} {
			got := st.rec.get(hop)
			if got.requestID != "req-propagation-42" {
				t.Errorf("%s hop saw request id %q, want the caller's", hop, got.requestID)
			}
			// The caller's deadline, not a default: kit/client's is 10s,
			// kit/server's 30s. (grpc-timeout is sent in coarse units,
			// hence the slack.)
			if got.deadline.IsZero() || got.deadline.After(start.Add(timeout+100*time.Millisecond)) || got.deadline.Before(start.Add(timeout-2*time.Second)) {
				t.Errorf("%s hop saw deadline %v, want about %v", hop, got.deadline, start.Add(timeout))
			}
		}
	})
}

func TestGetAndListOrders(t *testing.T) {
	eachStack(t, func(t *testing.T, st *stack) {
		ctx := t.Context()
		alice, bob := st.newUser(t), st.newUser(t)
		var want []string
		for i := range 5 {
			resp, err := st.orders.CreateOrder(ctx, createReq(alice, "tok_approve", fmt.Sprint("list-", i)))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, resp.GetOrder().GetId())
		}
		if _, err := st.orders.CreateOrder(ctx, createReq(bob, "tok_approve", "list-bob")); err != nil {
			t.Fatal(err)
		}

		_, err := st.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: uuid.NewString()})
		wantStatus(t, err, codes.NotFound, "ORDER_NOT_FOUND", "")
		_, err = st.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: "nope"})
		wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "id")

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
				wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", tt.field)
			})
		}
	})
}

func TestOpenRequiresPeers(t *testing.T) {
	url := sqldbtest.URLs(t)["sqlite"]
	if _, err := order.Open(t.Context(), order.Config{DatabaseURL: url}); err == nil {
		t.Fatal("Open without peer connections succeeded")
	}
}
