package peers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
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
}

func (c *conn) Invoke(ctx context.Context, _ string, _, reply any, _ ...grpc.CallOption) error {
	c.ctx = ctx
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

func TestPaymentsCharge(t *testing.T) {
	charge := domain.PaymentCharge{IdempotencyKey: "order-1", Token: "tok", Reference: "1", Amount: domain.Money{Currency: "USD", Units: 5}}
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
		{name: "key reused is no decline", err: apierr.New(codes.FailedPrecondition, "IDEMPOTENCY_KEY_REUSED", "no"), wantErr: errAny},
		{name: "unknown token", err: apierr.InvalidField("payment_method_token", "unknown"), wantErr: domain.ErrInvalidPaymentMethod},
		{name: "other invalid field", err: apierr.InvalidField("amount.units", "bad"), wantErr: errAny},
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
		{"down", status.Error(codes.Unavailable, "down"), domain.ErrUsersUnavailable},
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

// errAny stands for "some error that is none of the domain's sentinels".
var errAny = errors.New("any error")

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch want {
	case nil:
		if err != nil {
			t.Fatalf("error %v, want nil", err)
		}
	case errAny:
		for _, sentinel := range []error{domain.ErrInvalidPaymentMethod, domain.ErrPaymentUnavailable, domain.ErrUsersUnavailable, domain.ErrUserNotFound, context.Canceled} {
			if err == nil || errors.Is(err, sentinel) {
				t.Fatalf("error %v, want an unclassified error", err)
			}
		}
	default:
		if !errors.Is(err, want) {
			t.Fatalf("error %v, want %v", err, want)
		}
	}
}
