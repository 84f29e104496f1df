package domain

import (
	"errors"
	"fmt"
	"time"
)

// Reasons are the stable, machine-readable reasons of order request
// failures. They are part of the public contract and never change once
// published.
const (
	// ReasonCurrencyMismatch: the prices sent for an order are in more than one currency.
	ReasonCurrencyMismatch = "CURRENCY_MISMATCH"
)

var (
	// ErrNotFound: no order has the given id.
	ErrNotFound = errors.New("order not found")
	// ErrIdempotencyKeyReused: the idempotency key was first used with a
	// different request.
	ErrIdempotencyKeyReused = errors.New("idempotency key already used with a different request")
	// ErrOverloaded: the Scheduler holds as many orders as it takes, so a
	// new one is refused before anything is stored; the client may try
	// again later. Repeats of orders already placed are still answered.
	ErrOverloaded = errors.New("too many orders in progress")
	// ErrDuplicate is returned by a Repository when the idempotency key is
	// already taken, typically by a concurrent request that won the race.
	ErrDuplicate = errors.New("duplicate key")
	// ErrConflict is returned by a Repository when the order changed since
	// the version a change was computed from: another runner moved the saga
	// on, and the change must be recomputed from the stored order.
	ErrConflict = errors.New("order changed concurrently")

	// ErrUserNotFound: the customer placing the order does not exist.
	ErrUserNotFound = errors.New("user not found")
	// ErrUsersUnavailable: the user service failed temporarily.
	ErrUsersUnavailable = errors.New("user service temporarily unavailable")

	// ErrProductNotFound: a sku names no product.
	ErrProductNotFound = errors.New("product not found")
	// ErrOutOfStock: stock cannot cover every line; nothing was reserved.
	ErrOutOfStock = errors.New("out of stock")
	// ErrReservationReleased: the order's reservation was released (or the
	// order was released before it reserved), so it can be neither made
	// nor committed.
	ErrReservationReleased = errors.New("reservation released")
	// ErrReservationCommitted: the order's reservation is committed, so it
	// cannot be released.
	ErrReservationCommitted = errors.New("reservation committed")
	// ErrInventoryUnavailable: the inventory service failed temporarily.
	ErrInventoryUnavailable = errors.New("inventory temporarily unavailable")

	// ErrInvalidPaymentMethod: the payment service rejected the payment
	// token as unknown; nothing was charged.
	ErrInvalidPaymentMethod = errors.New("invalid payment method")
	// ErrChargeRefused: the payment service refused the charge for another
	// reason than a decline: its key was cancelled, or used for another
	// request. Whether money moved under the key is not known here.
	ErrChargeRefused = errors.New("charge refused")
	// ErrPaymentUnavailable: the payment service failed temporarily.
	ErrPaymentUnavailable = errors.New("payment temporarily unavailable")
)

// FieldError is bad input in one request field.
type FieldError struct {
	// Field is the path of the field in the request, like "items[1].quantity".
	Field string
	// Reason is the stable reason; empty means the generic INVALID_ARGUMENT.
	Reason string
	// Description says what is wrong, for a human.
	Description string
}

// Error implements error.
func (e *FieldError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Description) }

// RefusedError is a peer's definite refusal of a saga call, which no retry
// changes (it found the request invalid, or a precondition of its own
// unmet, for a reason the adapter does not know): the forward step gives
// up at once rather than retrying to its bound.
type RefusedError struct {
	// Cause is the peer's error, for the log and the order's last error.
	Cause error
}

// Error implements error.
func (e *RefusedError) Error() string { return "refused: " + e.Cause.Error() }

// Unwrap returns Cause.
func (e *RefusedError) Unwrap() error { return e.Cause }

// RetryableError is a temporary failure of a peer: Err says which
// (ErrUsersUnavailable, ErrInventoryUnavailable, ErrPaymentUnavailable) and
// RetryAfter how long the peer suggests waiting, 0 when it did not say.
type RetryableError struct {
	// Err is the failure, matched with errors.Is.
	Err error
	// RetryAfter is the suggested delay before trying again.
	RetryAfter time.Duration
	// Cause is the peer's error, for the log.
	Cause error
}

// Error implements error.
func (e *RetryableError) Error() string {
	if e.Cause != nil {
		return e.Err.Error() + ": " + e.Cause.Error()
	}
	return e.Err.Error()
}

// Unwrap lets errors.Is see Err.
func (e *RetryableError) Unwrap() error { return e.Err }
