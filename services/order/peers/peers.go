// Package peers adapts the order service's ports (domain.Users,
// domain.Inventory, domain.Payments) to the user, inventory and payment
// services' gRPC APIs. It turns their status errors into domain errors, so
// the domain never sees gRPC.
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
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/services/order/domain"
)

// DefaultRetryAfter is the retry hint of a temporary failure whose peer did
// not say how long to wait.
const DefaultRetryAfter = time.Second

// Stable reasons of the peers that the adapters recognise.
const (
	reasonChargeCancelled   = "CHARGE_CANCELLED"
	reasonKeyReused         = "IDEMPOTENCY_KEY_REUSED"
	reasonOutOfStock        = "OUT_OF_STOCK"
	reasonReservationGone   = "RESERVATION_RELEASED"
	reasonReservationSold   = "RESERVATION_COMMITTED"
	reasonProductNotFound   = "PRODUCT_NOT_FOUND"
	reasonReservationAbsent = "RESERVATION_NOT_FOUND"
)

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

// CheckUser implements domain.Users. A user id the user service finds
// malformed names no user.
func (u *Users) CheckUser(ctx context.Context, userID string) error {
	_, err := u.client.GetUser(ctx, &userv1.GetUserRequest{Id: userID})
	switch apierr.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound, codes.InvalidArgument:
		return domain.ErrUserNotFound
	}
	return unknown(err, domain.ErrUsersUnavailable, "get user "+userID)
}

// Inventory implements domain.Inventory over duet.inventory.v1.InventoryService.
type Inventory struct {
	client inventoryv1.InventoryServiceClient
}

var _ domain.Inventory = (*Inventory)(nil)

// NewInventory returns Inventory calling the inventory service over cc.
func NewInventory(cc grpc.ClientConnInterface) *Inventory {
	return &Inventory{client: inventoryv1.NewInventoryServiceClient(cc)}
}

// Prices implements domain.Inventory.
func (i *Inventory) Prices(ctx context.Context, skus []string) (map[string]domain.Money, error) {
	resp, err := i.client.BatchGetProducts(ctx, &inventoryv1.BatchGetProductsRequest{Skus: skus})
	switch apierr.Code(err) {
	case codes.OK:
		prices := make(map[string]domain.Money, len(resp.GetProducts()))
		for _, p := range resp.GetProducts() {
			prices[p.GetSku()] = domain.Money{Currency: p.GetPrice().GetCurrencyCode(), Units: p.GetPrice().GetUnits()}
		}
		return prices, nil
	case codes.NotFound:
		return nil, fmt.Errorf("%w: %s", domain.ErrProductNotFound, message(err))
	}
	return nil, unknown(err, domain.ErrInventoryUnavailable, "get products")
}

// Reserve implements domain.Inventory.
func (i *Inventory) Reserve(ctx context.Context, orderID string, lines []domain.StockLine) error {
	req := &inventoryv1.ReserveStockRequest{OrderId: orderID, Lines: make([]*inventoryv1.StockLine, len(lines))}
	for n, l := range lines {
		req.Lines[n] = &inventoryv1.StockLine{Sku: l.SKU, Quantity: l.Quantity}
	}
	resp, err := i.client.ReserveStock(ctx, req)
	switch {
	case err == nil:
		if resp.GetReservation().GetStatus() == inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED {
			return domain.ErrReservationReleased
		}
		return nil
	case apierr.Reason(err) == reasonProductNotFound:
		return fmt.Errorf("%w: %s", domain.ErrProductNotFound, message(err))
	case apierr.Reason(err) == reasonOutOfStock:
		return fmt.Errorf("%w: %s", domain.ErrOutOfStock, message(err))
	case apierr.Reason(err) == reasonReservationGone:
		return domain.ErrReservationReleased
	}
	return unknown(err, domain.ErrInventoryUnavailable, "reserve stock for order "+orderID)
}

// Commit implements domain.Inventory. An order with no reservation has
// nothing to commit, as if it had been released.
func (i *Inventory) Commit(ctx context.Context, orderID string) error {
	_, err := i.client.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: orderID})
	switch {
	case err == nil:
		return nil
	case apierr.Reason(err) == reasonReservationGone, apierr.Reason(err) == reasonReservationAbsent:
		return domain.ErrReservationReleased
	}
	return unknown(err, domain.ErrInventoryUnavailable, "commit stock of order "+orderID)
}

// Release implements domain.Inventory.
func (i *Inventory) Release(ctx context.Context, orderID string) error {
	_, err := i.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: orderID})
	switch {
	case err == nil:
		return nil
	case apierr.Reason(err) == reasonReservationSold:
		return domain.ErrReservationCommitted
	}
	return unknown(err, domain.ErrInventoryUnavailable, "release stock of order "+orderID)
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
// declined payment (ErrorInfo metadata payment_id), or with a decline
// reason, is a declined result.
func (p *Payments) Charge(ctx context.Context, c domain.PaymentCharge) (domain.PaymentResult, error) {
	resp, err := p.client.Charge(ctx, &paymentv1.ChargeRequest{
		Amount:             &typev1.Money{CurrencyCode: c.Amount.Currency, Units: c.Amount.Units},
		PaymentMethodToken: c.Token,
		IdempotencyKey:     c.IdempotencyKey,
		Reference:          c.Reference,
		UserId:             c.UserID,
	})
	if err == nil {
		return domain.PaymentResult{PaymentID: resp.GetPayment().GetId()}, nil
	}
	switch apierr.Code(err) {
	case codes.FailedPrecondition:
		info := apierr.Info(err)
		switch reason := info.GetReason(); {
		case reason == reasonChargeCancelled, reason == reasonKeyReused:
			return domain.PaymentResult{}, fmt.Errorf("%w: %s", domain.ErrChargeRefused, reason)
		case info.GetMetadata()["payment_id"] != "", slices.Contains(declineReasons, reason):
			return domain.PaymentResult{PaymentID: info.GetMetadata()["payment_id"], Declined: true, DeclineReason: reason}, nil
		}
	case codes.InvalidArgument:
		for _, v := range apierr.FieldViolations(err) {
			if v.Field == "payment_method_token" {
				return domain.PaymentResult{}, domain.ErrInvalidPaymentMethod
			}
		}
	}
	// The key carries the order's ChargeSecret: errors go to the log and
	// the order's last_error, so they name the order instead.
	return domain.PaymentResult{}, unknown(err, domain.ErrPaymentUnavailable, "charge for order "+c.Reference)
}

// CancelCharge implements domain.Payments.
func (p *Payments) CancelCharge(ctx context.Context, key string) (string, error) {
	resp, err := p.client.CancelCharge(ctx, &paymentv1.CancelChargeRequest{IdempotencyKey: key})
	if err == nil {
		return resp.GetPayment().GetId(), nil
	}
	return "", unknown(err, domain.ErrPaymentUnavailable, "cancel the order's charge") // not the key: see Charge
}

// unknown classifies an error that is no business outcome: a
// *domain.RetryableError wrapping kind when the peer's answer is not known
// yet and the same call may be retried (UNAVAILABLE, DEADLINE_EXCEEDED,
// RESOURCE_EXHAUSTED, ABORTED), a *domain.RefusedError when the peer
// refused the call for good (INVALID_ARGUMENT, OUT_OF_RANGE,
// FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS with a reason the adapter
// does not know: a bug, or data the peer does not accept, such as a price
// in a currency the payment service does not know), context.Canceled when
// the caller went away, and the error itself, described by what, otherwise
// (INTERNAL and the like: the saga retries those within its bound, in case
// they pass, and logs them). UNAUTHENTICATED and PERMISSION_DENIED are
// among the latter on purpose: a peer refusing the saga is a deployment's
// mistake that access policies and key sets, re-read while serving, and a
// rolling change's other replicas may mend within the bound.
func unknown(err error, kind error, what string) error {
	switch apierr.Code(err) {
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition, codes.NotFound, codes.AlreadyExists:
		return &domain.RefusedError{Cause: fmt.Errorf("%s: %w", what, err)}
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		d, ok := apierr.RetryDelay(err)
		if !ok || d <= 0 {
			d = DefaultRetryAfter
		}
		return &domain.RetryableError{Err: kind, RetryAfter: d, Cause: err}
	case codes.Canceled:
		return context.Canceled
	}
	return fmt.Errorf("%s: %w", what, err)
}

// message is the status message of err.
func message(err error) string {
	return status.Convert(err).Message()
}
