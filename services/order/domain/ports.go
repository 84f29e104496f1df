package domain

import (
	"context"
	"time"
)

// Users is the user service, as the order service needs it.
type Users interface {
	// CheckUser returns nil when the user exists, ErrUserNotFound when it
	// does not, and a *RetryableError wrapping ErrUsersUnavailable when the
	// answer is not known yet.
	CheckUser(ctx context.Context, userID string) error
}

// Payments is the payment service, as the order service needs it.
type Payments interface {
	// Charge captures c.Amount once per c.IdempotencyKey. A declined charge
	// is a result (Declined set), not an error. Errors: a *RetryableError
	// wrapping ErrPaymentUnavailable when the outcome is not known yet and
	// the same charge may be retried, ErrInvalidPaymentMethod for a token
	// the payment service rejects, anything else for failures to report.
	Charge(ctx context.Context, c PaymentCharge) (PaymentResult, error)
}

// PaymentCharge is a charge for an order.
type PaymentCharge struct {
	// IdempotencyKey is derived from the order id (see PaymentKey), so every
	// attempt to pay one order is the same charge.
	IdempotencyKey string
	// Token is the payment method token.
	Token string
	// Reference is the order id, kept with the payment.
	Reference string
	// Amount is the order total.
	Amount Money
}

// PaymentResult is the outcome of a charge.
type PaymentResult struct {
	// PaymentID is the payment made, captured or declined.
	PaymentID string
	// Declined reports that the payment was declined.
	Declined bool
	// DeclineReason is the payment service's stable reason, like PAYMENT_DECLINED.
	DeclineReason string
}

// Position is a place in a user's orders, ordered by (CreateTime, ID).
type Position struct {
	// CreateTime is the creation time of the last order seen.
	CreateTime time.Time
	// ID is its id, breaking ties.
	ID string
}

// Repository stores orders durably.
type Repository interface {
	// Create stores a new order with its items, atomically. It returns
	// ErrDuplicate when an order with the same idempotency key exists.
	Create(ctx context.Context, o *Order) error
	// ByID returns the order with the given id, or ErrNotFound.
	ByID(ctx context.Context, id string) (*Order, error)
	// ByIdempotencyKey returns the order created with key, or ErrNotFound.
	ByIdempotencyKey(ctx context.Context, key string) (*Order, error)
	// Update runs change on the stored order in one transaction and saves
	// what it did to the order's status, payment and times; ErrNotFound if
	// there is no such order. It returns the order as saved.
	Update(ctx context.Context, id string, change func(*Order) error) (*Order, error)
	// DeletePending removes the order with the given id if it is still
	// PENDING, and does nothing otherwise.
	DeletePending(ctx context.Context, id string) error
	// ListByUser returns up to limit orders of userID after position
	// (from the first when nil), oldest first.
	ListByUser(ctx context.Context, userID string, after *Position, limit int) ([]*Order, error)
}
