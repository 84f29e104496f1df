package domain

import (
	"errors"
	"fmt"
	"time"
)

// Reasons are the stable, machine-readable reasons of order failures. They
// are part of the public contract and never change once published.
const (
	// ReasonCurrencyMismatch: the items of an order are priced in more than one currency.
	ReasonCurrencyMismatch = "CURRENCY_MISMATCH"
)

var (
	// ErrNotFound: no order has the given id.
	ErrNotFound = errors.New("order not found")
	// ErrUserNotFound: the customer placing the order does not exist.
	ErrUserNotFound = errors.New("user not found")
	// ErrIdempotencyKeyReused: the idempotency key was first used with a
	// different request.
	ErrIdempotencyKeyReused = errors.New("idempotency key already used with a different request")
	// ErrInvalidTransition: the order is no longer PENDING, so its payment
	// outcome is settled and cannot change.
	ErrInvalidTransition = errors.New("order is already settled")
	// ErrPaymentUnavailable: the payment service failed temporarily. The
	// order stays PENDING; retrying with the same idempotency key completes it.
	ErrPaymentUnavailable = errors.New("payment temporarily unavailable")
	// ErrUsersUnavailable: the user service failed temporarily; nothing was stored.
	ErrUsersUnavailable = errors.New("user service temporarily unavailable")
	// ErrInvalidPaymentMethod: the payment service rejected the payment
	// token as unknown; nothing was charged.
	ErrInvalidPaymentMethod = errors.New("invalid payment method")
	// ErrDuplicate is returned by a Repository when the idempotency key is
	// already taken, typically by a concurrent request that won the race.
	ErrDuplicate = errors.New("duplicate key")
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

// RetryableError is a temporary failure of a peer: Err says which
// (ErrPaymentUnavailable, ErrUsersUnavailable) and RetryAfter how long the
// peer suggests waiting, 0 when it did not say.
type RetryableError struct {
	// Err is the failure, matched with errors.Is.
	Err error
	// RetryAfter is the suggested delay before trying again.
	RetryAfter time.Duration
}

// Error implements error.
func (e *RetryableError) Error() string { return e.Err.Error() }

// Unwrap lets errors.Is see Err.
func (e *RetryableError) Unwrap() error { return e.Err }
