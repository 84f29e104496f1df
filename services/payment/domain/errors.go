package domain

import (
	"errors"
	"fmt"
)

// Reasons are the stable, machine-readable reasons of payment failures. They
// are part of the public contract and never change once published.
const (
	// ReasonDeclined: the provider declined the charge.
	ReasonDeclined = "PAYMENT_DECLINED"
	// ReasonInsufficientFunds: the provider declined for lack of funds.
	ReasonInsufficientFunds = "INSUFFICIENT_FUNDS"
	// ReasonCurrencyMismatch: an amount's currency differs from the payment's.
	ReasonCurrencyMismatch = "CURRENCY_MISMATCH"
)

var (
	// ErrNotFound: no payment has the given id.
	ErrNotFound = errors.New("payment not found")
	// ErrIdempotencyKeyReused: the idempotency key was first used with a
	// different request, so repeating its outcome would be wrong.
	ErrIdempotencyKeyReused = errors.New("idempotency key already used with a different request")
	// ErrProviderUnavailable: the provider failed temporarily; nothing was
	// charged or recorded and the same request may be retried.
	ErrProviderUnavailable = errors.New("payment provider temporarily unavailable")
	// ErrUnknownPaymentMethod: the provider does not know the payment method
	// token. The provider returns it; the service turns it into a FieldError.
	ErrUnknownPaymentMethod = errors.New("unknown payment method")
	// ErrChargeCancelled: the idempotency key was cancelled (CancelCharge)
	// before any charge was made with it, so none ever will be.
	ErrChargeCancelled = errors.New("charge cancelled")
	// ErrNotRefundable: the payment captured nothing (it was declined).
	ErrNotRefundable = errors.New("payment is not refundable")
	// ErrRefundExceedsCharge: the refund would bring the refunded total above
	// the amount charged.
	ErrRefundExceedsCharge = errors.New("refund exceeds what is left of the charge")
	// ErrDuplicate is returned by a Repository when a unique key (a charge's
	// idempotency key, a refund's key) is already taken, typically by a
	// concurrent request that won the race.
	ErrDuplicate = errors.New("duplicate key")
	// ErrConflict is returned by a Repository when the payment changed
	// between read and write; the service retries the whole operation.
	ErrConflict = errors.New("concurrent update")
	// ErrNotRecorded: the provider answered a charge, and may have moved
	// money, but recording the payment failed, several times. Sending the
	// same charge again (the same key) is safe and records it: the
	// provider answers a repeated key with its first outcome.
	ErrNotRecorded = errors.New("the provider answered the charge but the payment could not be recorded")
	// ErrNotVoided: the provider captured a charge after its key was
	// cancelled, and voiding it failed, voidAttempts times. The key is
	// recorded due for a void, which ResumeVoids makes later (the same
	// charge again makes it at once); until then the money is captured
	// with no payment.
	ErrNotVoided = errors.New("the provider captured the charge after its key was cancelled, and voiding it failed")
)

// FieldError is bad input in one request field.
type FieldError struct {
	// Field is the path of the field in the request, like "amount.units".
	Field string
	// Reason is the stable reason; empty means the generic INVALID_ARGUMENT.
	Reason string
	// Description says what is wrong, for a human.
	Description string
}

// Error implements error.
func (e *FieldError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Description) }

// DeclinedError is a charge the provider declined. The declined payment is
// recorded, so it carries the payment's id.
type DeclinedError struct {
	// Reason is ReasonDeclined or ReasonInsufficientFunds.
	Reason string
	// PaymentID is the id of the recorded, declined payment.
	PaymentID string
}

// Error implements error.
func (e *DeclinedError) Error() string {
	return fmt.Sprintf("payment %s declined: %s", e.PaymentID, e.Reason)
}
