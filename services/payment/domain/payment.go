package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"time"
)

// Status is where a payment stands.
type Status string

// The statuses a payment goes through. A declined payment stays declined; a
// captured one moves to partially refunded and refunded as money goes back.
const (
	StatusCaptured          Status = "CAPTURED"
	StatusDeclined          Status = "DECLINED"
	StatusPartiallyRefunded Status = "PARTIALLY_REFUNDED"
	StatusRefunded          Status = "REFUNDED"
)

// Payment is one charge and what has been refunded of it.
type Payment struct {
	// ID is the server-assigned identifier.
	ID string
	// Amount is what was charged (or attempted, when declined).
	Amount Money
	// RefundedUnits is how much has been refunded, in Amount's currency,
	// counting refunds the provider has yet to confirm.
	RefundedUnits int64
	// PendingRefundUnits is the part of RefundedUnits the provider has not
	// yet confirmed returning; the service asks it again until it does.
	PendingRefundUnits int64
	// Status is where the payment stands.
	Status Status
	// DeclineReason is set when Status is StatusDeclined.
	DeclineReason string
	// Reference is the caller's free-form reference, such as an order id.
	Reference string
	// IdempotencyKey is the key the charge was made with.
	IdempotencyKey string
	// UserID is the customer charged, as the caller said; may be empty.
	UserID string
	// Fingerprint identifies the charge request (amount, token, reference),
	// so a repeat of the key with another request is detected without
	// storing the payment method token itself.
	Fingerprint string
	// CreateTime is when the charge was made.
	CreateTime time.Time
	// UpdateTime is when the payment last changed.
	UpdateTime time.Time
}

// Refunded is the refunded amount as Money.
func (p *Payment) Refunded() Money { return Money{Currency: p.Amount.Currency, Units: p.RefundedUnits} }

// RefundPending is the refunded amount the provider has yet to confirm, as
// Money.
func (p *Payment) RefundPending() Money {
	return Money{Currency: p.Amount.Currency, Units: p.PendingRefundUnits}
}

// Remaining is how much of the charge may still be refunded.
func (p *Payment) Remaining() int64 {
	if p.Status == StatusDeclined {
		return 0
	}
	return p.Amount.Units - p.RefundedUnits
}

// applyRefund refunds amount (all that remains when nil), pending until the
// provider confirms it, and returns the units refunded. It enforces that a declined payment is not refundable, the
// currency matches, and the refunds never exceed the charge.
func (p *Payment) applyRefund(amount *Money, now time.Time) (int64, error) {
	if p.Status == StatusDeclined {
		return 0, ErrNotRefundable
	}
	units := p.Remaining()
	if amount != nil {
		if amount.Currency != p.Amount.Currency {
			return 0, &FieldError{
				Field:       "amount.currency_code",
				Reason:      ReasonCurrencyMismatch,
				Description: fmt.Sprintf("must be the payment's currency %s", p.Amount.Currency),
			}
		}
		units = amount.Units
	}
	if units <= 0 || units > p.Remaining() {
		return 0, ErrRefundExceedsCharge
	}
	p.RefundedUnits += units
	p.PendingRefundUnits += units
	p.Status = StatusPartiallyRefunded
	if p.RefundedUnits == p.Amount.Units {
		p.Status = StatusRefunded
	}
	p.UpdateTime = now
	return units, nil
}

// PendingVoid is a cancelled key the provider is still to void.
type PendingVoid struct {
	// Key is the cancelled idempotency key.
	Key string
	// Mark identifies the latest MarkVoidDue, for VoidDone.
	Mark int64
	// Attempts counts the times ResumeVoids asked the provider.
	Attempts int
	// Since is when the void became due.
	Since time.Time
	// NextAttemptTime is when ResumeVoids may ask again.
	NextAttemptTime time.Time
}

// RefundStatus is where a refund stands.
type RefundStatus string

// A refund is recorded pending, and done once the provider has returned the
// money.
const (
	RefundPending RefundStatus = "PENDING"
	RefundDone    RefundStatus = "DONE"
)

// Refund is money returned from a payment.
type Refund struct {
	// ID is the server-assigned identifier.
	ID string
	// PaymentID is the refunded payment.
	PaymentID string
	// Units is how much was refunded, in the payment's currency.
	Units int64
	// RequestedUnits is what the request asked for: 0 for "all that remains".
	// A repeat under the same key must ask for the same.
	RequestedUnits int64
	// IdempotencyKey is the caller's key, possibly empty.
	IdempotencyKey string
	// Status is RefundPending until the provider confirms the refund.
	Status RefundStatus
	// Attempts counts the times ResumeRefunds asked the provider for it.
	Attempts int
	// NextAttemptTime is when ResumeRefunds may ask for it again, while
	// pending.
	NextAttemptTime time.Time
	// CreateTime is when the refund was made.
	CreateTime time.Time
}

// ChargeRequest asks to capture an amount.
type ChargeRequest struct {
	// Amount is what to capture; more than zero.
	Amount Money
	// Token is the payment method token.
	Token string
	// IdempotencyKey makes retries safe.
	IdempotencyKey string
	// Reference is kept with the payment.
	Reference string
	// UserID is the customer charged, kept with the payment; optional.
	UserID string
}

// validate checks the rules the domain relies on, whatever the transport
// already checked.
func (r ChargeRequest) validate() error {
	if err := r.Amount.validatePositive("amount"); err != nil {
		return err
	}
	if r.Token == "" {
		return &FieldError{Field: "payment_method_token", Description: "must not be empty"}
	}
	if r.IdempotencyKey == "" {
		return &FieldError{Field: "idempotency_key", Description: "must not be empty"}
	}
	return nil
}

// fingerprint is a digest of everything that makes two charge requests the
// same request. Fields are length-prefixed so no two requests collide by
// concatenation.
func (r ChargeRequest) fingerprint() string {
	h := sha256.New()
	writeField(h, r.Amount.Currency)
	writeField(h, fmt.Sprint(r.Amount.Units))
	writeField(h, r.Token)
	writeField(h, r.Reference)
	// Only when given, so that requests without a user keep the
	// fingerprints recorded before payments had users.
	if r.UserID != "" {
		writeField(h, "user:"+r.UserID)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	fmt.Fprintf(h, "%d:%s;", len(s), s)
}

// RefundRequest asks to return money of a payment.
type RefundRequest struct {
	// PaymentID is the payment to refund.
	PaymentID string
	// Amount is how much to refund; nil refunds all that remains.
	Amount *Money
	// IdempotencyKey is optional; a repeat with the same key refunds nothing more.
	IdempotencyKey string
}

// requestedUnits is the amount asked for, 0 meaning all that remains.
func (r RefundRequest) requestedUnits() int64 {
	if r.Amount == nil {
		return 0
	}
	return r.Amount.Units
}
