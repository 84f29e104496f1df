package domain

import "context"

// Provider is the payment provider that actually moves money. The service
// ships a deterministic simulator; tests plug in their own.
//
// Charge returns the provider's verdict. Errors: ErrUnknownPaymentMethod for
// a token the provider does not know, ErrProviderUnavailable for a temporary
// failure (nothing was captured), or the context's error.
type Provider interface {
	Charge(ctx context.Context, c ProviderCharge) (ProviderResult, error)
}

// ProviderCharge is what the provider is asked to capture.
type ProviderCharge struct {
	// IdempotencyKey is passed on so that two racing identical requests are
	// captured at most once by the provider itself, as real providers allow.
	IdempotencyKey string
	// Token is the payment method token.
	Token string
	// Amount is what to capture.
	Amount Money
}

// ProviderResult is the provider's verdict on a charge.
type ProviderResult struct {
	// Approved reports whether the amount was captured.
	Approved bool
	// DeclineReason is ReasonDeclined or ReasonInsufficientFunds when not approved.
	DeclineReason string
}

// Repository stores payments and their refunds durably.
type Repository interface {
	// Create stores a new payment. It returns ErrDuplicate when a payment
	// with the same idempotency key exists.
	Create(ctx context.Context, p *Payment) error
	// ByID returns the payment with the given id, or ErrNotFound.
	ByID(ctx context.Context, id string) (*Payment, error)
	// ByIdempotencyKey returns the payment charged with key, or ErrNotFound.
	ByIdempotencyKey(ctx context.Context, key string) (*Payment, error)
	// Refund runs apply in one transaction over the payment with the given
	// id (ErrNotFound if none) while no other refund of it can interleave.
	// prior is the refund recorded earlier under refundKey, or nil (always
	// nil when refundKey is empty). apply changes p and returns the refund to
	// record, or nil to record nothing; the store then saves both atomically
	// and returns the payment as stored.
	Refund(ctx context.Context, id, refundKey string, apply func(p *Payment, prior *Refund) (*Refund, error)) (*Payment, error)
}
