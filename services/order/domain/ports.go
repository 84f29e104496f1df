package domain

import (
	"context"
	"time"
)

// Users is the user service, as the order service needs it.
type Users interface {
	// CheckUser returns nil when the user exists, ErrUserNotFound when it
	// does not, and another error (usually a *RetryableError wrapping
	// ErrUsersUnavailable) when the answer is not known yet, a
	// *RefusedError when the user service refused the call for good.
	CheckUser(ctx context.Context, userID string) error
}

// Inventory is the inventory service, as the order saga needs it. Reserve,
// Commit and Release are idempotent on the order id: repeating one after a
// crash, or after an answer was lost, does nothing more.
type Inventory interface {
	// Prices returns the unit price of every sku. ErrProductNotFound when a
	// sku names no product.
	Prices(ctx context.Context, skus []string) (map[string]Money, error)
	// Reserve holds stock for the order: every line or none.
	// ErrOutOfStock when stock cannot cover them, ErrProductNotFound for
	// an unknown sku, ErrReservationReleased when the order was released.
	Reserve(ctx context.Context, orderID string, lines []StockLine) error
	// Commit makes the order's reservation final. ErrReservationReleased
	// when it was released or never made.
	Commit(ctx context.Context, orderID string) error
	// Release returns the order's reserved units to stock, and blocks a
	// later Reserve for the order if it never reserved.
	// ErrReservationCommitted when the reservation is committed.
	Release(ctx context.Context, orderID string) error
}

// Payments is the payment service, as the order saga needs it.
type Payments interface {
	// Charge captures c.Amount once per c.IdempotencyKey. A declined charge
	// is a result (Declined set), not an error. Errors: ErrInvalidPaymentMethod
	// for a token the payment service does not know, ErrChargeRefused when
	// the key was cancelled or used for another charge, a *RefusedError
	// when the payment service refused it for another reason, anything
	// else (usually a *RetryableError wrapping ErrPaymentUnavailable) when
	// the outcome is not known and the same charge may be retried.
	Charge(ctx context.Context, c PaymentCharge) (PaymentResult, error)
	// CancelCharge undoes the charge made with key, whatever happened to
	// it: a captured payment is refunded, and a charge not made yet never
	// will be. It returns the payment's id, "" when no charge was made.
	// Repeats are no-ops.
	CancelCharge(ctx context.Context, key string) (paymentID string, err error)
}

// PaymentCharge is a charge for an order.
type PaymentCharge struct {
	// IdempotencyKey is the order's own (see PaymentKey), so every attempt
	// to pay one order is the same charge.
	IdempotencyKey string
	// Token is the payment method token.
	Token string
	// Reference is the order id, kept with the payment.
	Reference string
	// UserID is the customer, kept with the payment.
	UserID string
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
	// ErrDuplicate when an order of the same user with the same
	// idempotency key exists.
	Create(ctx context.Context, o *Order) error
	// ByID returns the order with the given id, or ErrNotFound.
	ByID(ctx context.Context, id string) (*Order, error)
	// ByIdempotencyKey returns the order userID created with key, or
	// ErrNotFound. Keys are each user's own.
	ByIdempotencyKey(ctx context.Context, userID, key string) (*Order, error)
	// Save stores o's status, saga state, payment and total, and its items'
	// unit prices when pricesChanged, in one transaction, provided the
	// stored order is still at version from (o.Version is from+1); else
	// ErrConflict. When o is terminal, the same transaction records the
	// event that announces it (the outbox), so the change and its event
	// are stored together or not at all.
	Save(ctx context.Context, o *Order, from int64, pricesChanged bool) error
	// Pending returns the ids of up to limit PENDING orders whose next
	// attempt is due at or before due, the longest due first.
	Pending(ctx context.Context, due time.Time, limit int) ([]string, error)
	// ListByUser returns up to limit orders of userID after position
	// (from the first when nil), oldest first.
	ListByUser(ctx context.Context, userID string, after *Position, limit int) ([]*Order, error)
}

// Scheduler runs orders' sagas in the background.
type Scheduler interface {
	// Schedule asks for the saga of o, as just stored or read, to be run;
	// scheduling an order already scheduled does nothing. o is not changed
	// afterwards, so the runner may start from it instead of reading it
	// again (see Service.StepFrom).
	Schedule(o *Order)
	// Full reports whether the scheduler holds as many orders as it
	// takes; Create then refuses new ones (ErrOverloaded).
	Full() bool
}

// Notifier hears of every stored change of an order.
type Notifier interface {
	// Publish announces o as stored. o is not changed afterwards.
	Publish(o *Order)
}
