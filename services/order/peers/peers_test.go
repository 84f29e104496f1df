package peers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/peers"
)

// conn is a grpc.ClientConnInterface that answers every call with err, or
// with reply (an empty one when nil), and records the context it was given.
type conn struct {
	reply proto.Message
	err   error
	ctx   context.Context
	req   any
}

func (c *conn) Invoke(ctx context.Context, _ string, req, reply any, _ ...grpc.CallOption) error {
	c.ctx, c.req = ctx, req
	if c.err != nil {
		return c.err
	}
	if c.reply != nil {
		proto.Merge(reply.(proto.Message), c.reply)
	}
	return nil
}

func (c *conn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("no streams")
}

// wire turns err into what a client receives: a plain status error, with
// none of the server's Go types.
func wire(err error) error { return status.Convert(err).Err() }

// secret stands for an order's ChargeSecret in its payment key.
const secret = "5ec7e7"

// checkNoSecret fails when err's text, which the saga logs and stores as
// the order's last_error, holds the payment key's secret: with it, anyone
// who reads either could charge or cancel under the order's key first.
func checkNoSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("error %q names the payment key's secret", err)
	}
}

func TestPaymentsCharge(t *testing.T) {
	charge := domain.PaymentCharge{IdempotencyKey: "order-1-" + secret, Token: "tok", Reference: "1", UserID: "u1", Amount: domain.Money{Currency: "USD", Units: 5}}
	tests := []struct {
		name      string
		reply     proto.Message
		err       error
		want      domain.PaymentResult
		wantErr   error
		wantRetry time.Duration
	}{
		{name: "captured", reply: &paymentv1.ChargeResponse{Payment: &paymentv1.Payment{Id: "p1"}}, want: domain.PaymentResult{PaymentID: "p1"}},
		{name: "declined", err: apierr.New(codes.FailedPrecondition, "PAYMENT_DECLINED", "no", apierr.Metadata("payment_id", "p2")),
			want: domain.PaymentResult{PaymentID: "p2", Declined: true, DeclineReason: "PAYMENT_DECLINED"}},
		{name: "declined, new reason", err: apierr.New(codes.FailedPrecondition, "CARD_EXPIRED", "no", apierr.Metadata("payment_id", "p3")),
			want: domain.PaymentResult{PaymentID: "p3", Declined: true, DeclineReason: "CARD_EXPIRED"}},
		{name: "insufficient funds", err: apierr.New(codes.FailedPrecondition, "INSUFFICIENT_FUNDS", "no", apierr.Metadata("payment_id", "p4")),
			want: domain.PaymentResult{PaymentID: "p4", Declined: true, DeclineReason: "INSUFFICIENT_FUNDS"}},
		{name: "key reused is no decline", err: apierr.New(codes.FailedPrecondition, "IDEMPOTENCY_KEY_REUSED", "no"), wantErr: domain.ErrChargeRefused},
		{name: "key cancelled", err: apierr.New(codes.FailedPrecondition, "CHARGE_CANCELLED", "no"), wantErr: domain.ErrChargeRefused},
		{name: "unknown token", err: apierr.InvalidField("payment_method_token", "unknown"), wantErr: domain.ErrInvalidPaymentMethod},
		{name: "other invalid field", err: apierr.InvalidField("amount.currency_code", "not ISO 4217"), wantErr: errRefused},
		{name: "unknown precondition", err: apierr.New(codes.FailedPrecondition, "ACCOUNT_CLOSED", "no"), wantErr: errRefused},
		{name: "provider down", err: apierr.Unavailable("PROVIDER_UNAVAILABLE", "down", 3*time.Second), wantErr: domain.ErrPaymentUnavailable, wantRetry: 3 * time.Second},
		{name: "connection refused", err: status.Error(codes.Unavailable, "connection refused"), wantErr: domain.ErrPaymentUnavailable, wantRetry: peers.DefaultRetryAfter},
		{name: "deadline", err: status.Error(codes.DeadlineExceeded, "slow"), wantErr: domain.ErrPaymentUnavailable, wantRetry: peers.DefaultRetryAfter},
		{name: "canceled", err: status.Error(codes.Canceled, "gone"), wantErr: context.Canceled},
		{name: "internal", err: apierr.Internal(), wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &conn{reply: tt.reply}
			if tt.err != nil {
				c.err = wire(tt.err)
			}
			got, err := peers.NewPayments(c).Charge(t.Context(), charge)
			checkErr(t, err, tt.wantErr)
			checkNoSecret(t, err)
			if req, ok := c.req.(*paymentv1.ChargeRequest); !ok || req.GetIdempotencyKey() != charge.IdempotencyKey || req.GetUserId() != "u1" ||
				req.GetReference() != "1" || req.GetAmount().GetUnits() != 5 || req.GetPaymentMethodToken() != "tok" {
				t.Fatalf("sent %v", c.req)
			}
			if got != tt.want {
				t.Fatalf("Charge() = %+v, want %+v", got, tt.want)
			}
			var re *domain.RetryableError
			if errors.As(err, &re) != (tt.wantRetry > 0) || (re != nil && re.RetryAfter != tt.wantRetry) {
				t.Fatalf("retry %+v, want %v", re, tt.wantRetry)
			}
		})
	}
}

func TestUsersCheckUser(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr error
	}{
		{"exists", nil, nil},
		{"not found", apierr.NotFound("USER_NOT_FOUND", "user", "u"), domain.ErrUserNotFound},
		{"malformed id", apierr.InvalidField("id", "not a uuid"), domain.ErrUserNotFound},
		{"down", status.Error(codes.Unavailable, "down"), domain.ErrUsersUnavailable},
		// Retried within the step's bound: a policy or key set re-read
		// may let the saga in.
		{"no token", apierr.New(codes.Unauthenticated, "TOKEN_MISSING", "a bearer token is needed"), errAny},
		{"not permitted", apierr.New(codes.PermissionDenied, "NOT_PERMITTED", "not yours"), errAny},
		{"internal", apierr.Internal(), errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &conn{}
			if tt.err != nil {
				c.err = wire(tt.err)
			}
			ctx := context.WithValue(t.Context(), ctxKey{}, "caller")
			checkErr(t, peers.NewUsers(c).CheckUser(ctx, "u"), tt.wantErr)
			if c.ctx.Value(ctxKey{}) != "caller" {
				t.Fatal("the caller's context was not passed on")
			}
		})
	}
}

type ctxKey struct{}

// sentinels are the domain's errors an adapter may classify a failure as.
var sentinels = []error{
	domain.ErrInvalidPaymentMethod, domain.ErrPaymentUnavailable, domain.ErrChargeRefused,
	domain.ErrUsersUnavailable, domain.ErrUserNotFound,
	domain.ErrInventoryUnavailable, domain.ErrProductNotFound, domain.ErrOutOfStock, domain.ErrReservationReleased, domain.ErrReservationCommitted,
	context.Canceled,
}

// errAny stands for "some error that is none of the domain's sentinels",
// and errRefused for a *domain.RefusedError, which is none of them either.
var (
	errAny     = errors.New("any error")
	errRefused = errors.New("refused")
)

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch want {
	case nil:
		if err != nil {
			t.Fatalf("error %v, want nil", err)
		}
	case errAny, errRefused:
		for _, sentinel := range sentinels {
			if err == nil || errors.Is(err, sentinel) {
				t.Fatalf("error %v, want an unclassified error", err)
			}
		}
		if refused := (*domain.RefusedError)(nil); errors.As(err, &refused) != (want == errRefused) {
			t.Fatalf("error %v: refused %v, want %v", err, refused != nil, want == errRefused)
		}
	default:
		if !errors.Is(err, want) {
			t.Fatalf("error %v, want %v", err, want)
		}
	}
}

func TestPaymentsCancelCharge(t *testing.T) {
	tests := []struct {
		name    string
		reply   proto.Message
		err     error
		want    string
		wantErr error
	}{
		{name: "refunded", reply: &paymentv1.CancelChargeResponse{Payment: &paymentv1.Payment{Id: "p1"}}, want: "p1"},
		{name: "nothing was charged", reply: &paymentv1.CancelChargeResponse{}},
		{name: "down", err: status.Error(codes.Unavailable, "down"), wantErr: domain.ErrPaymentUnavailable},
		{name: "not there yet", err: status.Error(codes.Unimplemented, "unknown method"), wantErr: errAny},
		{name: "refused", err: status.Error(codes.InvalidArgument, "no"), wantErr: errRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &conn{reply: tt.reply}
			if tt.err != nil {
				c.err = wire(tt.err)
			}
			got, err := peers.NewPayments(c).CancelCharge(t.Context(), "order-1-"+secret)
			checkErr(t, err, tt.wantErr)
			checkNoSecret(t, err)
			if got != tt.want || c.req.(*paymentv1.CancelChargeRequest).GetIdempotencyKey() != "order-1-"+secret {
				t.Fatalf("CancelCharge = %q (sent %v), want %q", got, c.req, tt.want)
			}
		})
	}
}

func TestInventory(t *testing.T) {
	notFound := apierr.New(codes.NotFound, "PRODUCT_NOT_FOUND", "products not found: X")
	reserved := &inventoryv1.ReserveStockResponse{Reservation: &inventoryv1.Reservation{Status: inventoryv1.ReservationStatus_RESERVATION_STATUS_RESERVED}}
	releasedReply := &inventoryv1.ReserveStockResponse{Reservation: &inventoryv1.Reservation{Status: inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED}}
	prices := &inventoryv1.BatchGetProductsResponse{Products: []*inventoryv1.Product{
		{Sku: "A", Price: &typev1.Money{CurrencyCode: "USD", Units: 300}},
		{Sku: "B", Price: &typev1.Money{CurrencyCode: "USD", Units: 400}},
	}}
	call := map[string]func(*peers.Inventory) error{
		"prices": func(i *peers.Inventory) error {
			got, err := i.Prices(t.Context(), []string{"A", "B"})
			if err == nil && (len(got) != 2 || got["B"] != (domain.Money{Currency: "USD", Units: 400})) {
				return fmt.Errorf("prices %v", got)
			}
			return err
		},
		"reserve": func(i *peers.Inventory) error {
			return i.Reserve(t.Context(), "o1", []domain.StockLine{{SKU: "A", Quantity: 2}})
		},
		"commit":  func(i *peers.Inventory) error { return i.Commit(t.Context(), "o1") },
		"release": func(i *peers.Inventory) error { return i.Release(t.Context(), "o1") },
	}
	tests := []struct {
		name    string
		call    string
		reply   proto.Message
		err     error
		wantErr error
	}{
		{"prices", "prices", prices, nil, nil},
		{"unknown product", "prices", nil, notFound, domain.ErrProductNotFound},
		{"inventory down", "prices", nil, status.Error(codes.Unavailable, "down"), domain.ErrInventoryUnavailable},
		{"reserved", "reserve", reserved, nil, nil},
		{"out of stock", "reserve", nil, apierr.New(codes.FailedPrecondition, "OUT_OF_STOCK", "short"), domain.ErrOutOfStock},
		{"reserving an unknown product", "reserve", nil, apierr.New(codes.FailedPrecondition, "PRODUCT_NOT_FOUND", "gone"), domain.ErrProductNotFound},
		{"reserving after release", "reserve", nil, apierr.New(codes.FailedPrecondition, "RESERVATION_RELEASED", "released"), domain.ErrReservationReleased},
		{"reservation released already", "reserve", releasedReply, nil, domain.ErrReservationReleased},
		{"other lines held", "reserve", nil, apierr.New(codes.FailedPrecondition, "RESERVATION_MISMATCH", "no"), errRefused},
		{"reserve refused as invalid", "reserve", nil, apierr.InvalidField("lines[0].quantity", "too many"), errRefused},
		{"prices refused as invalid", "prices", nil, apierr.InvalidField("skus[0]", "bad"), errRefused},
		{"reserve times out", "reserve", nil, status.Error(codes.DeadlineExceeded, "slow"), domain.ErrInventoryUnavailable},
		{"committed", "commit", nil, nil, nil},
		{"commit of a released reservation", "commit", nil, apierr.New(codes.FailedPrecondition, "RESERVATION_RELEASED", "released"), domain.ErrReservationReleased},
		{"commit without a reservation", "commit", nil, apierr.New(codes.NotFound, "RESERVATION_NOT_FOUND", "none"), domain.ErrReservationReleased},
		{"commit fails", "commit", nil, apierr.Internal(), errAny},
		{"released", "release", nil, nil, nil},
		{"release of a committed reservation", "release", nil, apierr.New(codes.FailedPrecondition, "RESERVATION_COMMITTED", "sold"), domain.ErrReservationCommitted},
		{"release interrupted", "release", nil, status.Error(codes.Canceled, "gone"), context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &conn{reply: tt.reply}
			if tt.err != nil {
				c.err = wire(tt.err)
			}
			checkErr(t, call[tt.call](peers.NewInventory(c)), tt.wantErr)
			if req, ok := c.req.(interface{ GetOrderId() string }); ok && req.GetOrderId() != "o1" {
				t.Fatalf("sent %v", c.req)
			}
		})
	}
}
