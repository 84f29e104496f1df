// Package peers adapts the order service's ports (domain.Users,
// domain.Payments) to the user and payment services' gRPC APIs. It turns
// their status errors into domain errors, so the domain never sees gRPC.
//
// Every call passes the caller's context on unchanged: its deadline becomes
// the peer's deadline, and the request id and trace context ride along in
// metadata (kit/client's interceptors put them there).
package peers

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/services/order/domain"
)

// DefaultRetryAfter is suggested to clients when a peer failed temporarily
// without saying how long to wait.
const DefaultRetryAfter = time.Second

// declineReasons are the payment service's reasons for a declined charge,
// recognised even if a future version stops sending the payment_id metadata.
var declineReasons = []string{"PAYMENT_DECLINED", "INSUFFICIENT_FUNDS"}

// Users implements domain.Users over duet.user.v1.UserService.
type Users struct {
	client userv1.UserServiceClient
}

var _ domain.Users = (*Users)(nil)

// NewUsers returns Users calling the user service over cc.
func NewUsers(cc grpc.ClientConnInterface) *Users {
	return &Users{client: userv1.NewUserServiceClient(cc)}
}

// CheckUser implements domain.Users.
func (u *Users) CheckUser(ctx context.Context, userID string) error {
	_, err := u.client.GetUser(ctx, &userv1.GetUserRequest{Id: userID})
	switch apierr.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound:
		return domain.ErrUserNotFound
	case codes.InvalidArgument:
		return &domain.FieldError{Field: "user_id", Description: "not a valid user id"}
	}
	if err := temporary(err, domain.ErrUsersUnavailable); err != nil {
		return err
	}
	return fmt.Errorf("get user %s: %w", userID, err)
}

// Payments implements domain.Payments over duet.payment.v1.PaymentService.
type Payments struct {
	client paymentv1.PaymentServiceClient
}

var _ domain.Payments = (*Payments)(nil)

// NewPayments returns Payments calling the payment service over cc.
func NewPayments(cc grpc.ClientConnInterface) *Payments {
	return &Payments{client: paymentv1.NewPaymentServiceClient(cc)}
}

// Charge implements domain.Payments. A FAILED_PRECONDITION naming the
// declined payment (ErrorInfo metadata payment_id) is a declined result.
func (p *Payments) Charge(ctx context.Context, c domain.PaymentCharge) (domain.PaymentResult, error) {
	resp, err := p.client.Charge(ctx, &paymentv1.ChargeRequest{
		Amount:             &typev1.Money{CurrencyCode: c.Amount.Currency, Units: c.Amount.Units},
		PaymentMethodToken: c.Token,
		IdempotencyKey:     c.IdempotencyKey,
		Reference:          c.Reference,
	})
	if err == nil {
		return domain.PaymentResult{PaymentID: resp.GetPayment().GetId()}, nil
	}
	switch apierr.Code(err) {
	case codes.FailedPrecondition:
		info := apierr.Info(err)
		if id := info.GetMetadata()["payment_id"]; id != "" || slices.Contains(declineReasons, info.GetReason()) {
			return domain.PaymentResult{PaymentID: id, Declined: true, DeclineReason: info.GetReason()}, nil
		}
	case codes.InvalidArgument:
		for _, v := range apierr.FieldViolations(err) {
			if v.Field == "payment_method_token" {
				return domain.PaymentResult{}, domain.ErrInvalidPaymentMethod
			}
		}
	}
	if err := temporary(err, domain.ErrPaymentUnavailable); err != nil {
		return domain.PaymentResult{}, err
	}
	return domain.PaymentResult{}, fmt.Errorf("charge %s: %w", c.IdempotencyKey, err)
}

// temporary returns a *domain.RetryableError wrapping kind when err means
// the peer's answer is not known yet and the same call may be retried
// (UNAVAILABLE, DEADLINE_EXCEEDED), the context's error when the caller
// went away, and nil otherwise.
func temporary(err error, kind error) error {
	switch apierr.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		d, ok := apierr.RetryDelay(err)
		if !ok || d <= 0 {
			d = DefaultRetryAfter
		}
		return &domain.RetryableError{Err: kind, RetryAfter: d}
	case codes.Canceled:
		return context.Canceled
	}
	return nil
}
