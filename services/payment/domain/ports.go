package domain

import (
	"context"
	"time"
)

// Provider is the payment provider that actually moves money. The service
// ships a deterministic simulator; tests plug in their own.
//
// Charge returns the provider's verdict. Errors: ErrUnknownPaymentMethod for
// a token the provider does not know, ErrProviderUnavailable for a temporary
// failure (nothing was captured), or the context's error.
//
// Void undoes whatever the provider captured under an idempotency key, as
// real providers cancel or refund a payment by the key it was made with:
// the service calls it for a cancelled key, where money may have been
// captured with no payment recorded (the store down when the provider
// answered, or a cancel racing the charge). A key the provider never
// captured under is a no-op, and so is a repeat. Errors:
// ErrProviderUnavailable for a temporary failure, or the context's error.
//
// Refund returns part or all of a captured charge. Its IdempotencyKey is the
// refund's own id, so a repeat (the service asks again until the provider
// confirms, and after a restart) returns the money once. Any error leaves
// the refund pending, to be asked again.
type Provider interface {
	Charge(ctx context.Context, c ProviderCharge) (ProviderResult, error)
	Void(ctx context.Context, idempotencyKey string) error
	Refund(ctx context.Context, r ProviderRefund) error
}

// ProviderRefund is what the provider is asked to return.
type ProviderRefund struct {
	// IdempotencyKey identifies the refund (it is the refund's id): the
	// provider returns the money once however often it is asked.
	IdempotencyKey string
	// ChargeKey is the idempotency key the charge was captured with.
	ChargeKey string
	// Amount is how much of the charge to return.
	Amount Money
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

// Repository stores payments, their refunds, cancelled charge keys, and the
// events reporting changes to them, durably. Every method that changes state
// records the events it is given in the same transaction as the change.
type Repository interface {
	// Create stores a new payment and events. It returns ErrDuplicate when
	// a payment with the same idempotency key exists, and
	// ErrChargeCancelled when the key was cancelled by CancelUncharged,
	// having marked the key's void due (MarkVoidDue) in its transaction.
	Create(ctx context.Context, p *Payment, events ...Event) error
	// ByID returns the payment with the given id, or ErrNotFound.
	ByID(ctx context.Context, id string) (*Payment, error)
	// ByIdempotencyKey returns the payment charged with key, or ErrNotFound.
	ByIdempotencyKey(ctx context.Context, key string) (*Payment, error)
	// Refund runs apply in one transaction over the payment with the given
	// id (ErrNotFound if none) while no other refund of it can interleave.
	// prior is the refund recorded earlier under refundKey, or nil (always
	// nil when refundKey is empty). apply changes p and returns the refund to
	// record and the events reporting it, or a nil refund to record nothing;
	// the store then saves them atomically and returns the payment as stored.
	Refund(ctx context.Context, id, refundKey string, apply func(p *Payment, prior *Refund) (*Refund, []Event, error)) (*Payment, error)
	// ChargeCancelled reports whether CancelUncharged recorded key.
	ChargeCancelled(ctx context.Context, key string) (bool, error)
	// CancelUncharged records that no charge may ever be made with key. It
	// returns ErrDuplicate when a payment with key exists (it must be
	// refunded instead), and nil when key is already cancelled. It and
	// Create exclude each other, so a key is either charged or cancelled.
	CancelUncharged(ctx context.Context, key string, at time.Time) error
	// PendingRefunds returns the refunds of payment paymentID still
	// pending, oldest first, at most limit.
	PendingRefunds(ctx context.Context, paymentID string, limit int) ([]Refund, error)
	// DueRefunds returns pending refunds whose NextAttemptTime is at or
	// before at, of every payment, in the order they fell due, at most
	// limit.
	DueRefunds(ctx context.Context, at time.Time, limit int) ([]Refund, error)
	// ClaimRefund takes pending refund r for one attempt, as read: it
	// counts the attempt and moves NextAttemptTime to next, provided r is
	// still pending and its NextAttemptTime unchanged. It reports whether
	// it did, so of several replicas resuming at once one asks the provider.
	ClaimRefund(ctx context.Context, r Refund, next time.Time) (bool, error)
	// MarkVoidDue records, at at, that cancelled key must be voided at the
	// provider, due for ResumeVoids at next unless VoidDone comes first,
	// and returns the mark to give VoidDone. ErrNotFound when key is not
	// cancelled. (Create, refusing a charge of a cancelled key, marks its
	// void due at once in the same transaction: the provider may have
	// captured it.)
	MarkVoidDue(ctx context.Context, key string, at, next time.Time) (mark int64, err error)
	// VoidDone records that the provider voided key, unless key was
	// marked again since mark (a capture after the void may need one),
	// and reports whether it did.
	VoidDone(ctx context.Context, key string, mark int64) (bool, error)
	// DueVoids returns the voids pending whose NextAttemptTime is at or
	// before at, in the order they fell due, at most limit.
	DueVoids(ctx context.Context, at time.Time, limit int) ([]PendingVoid, error)
	// ClaimVoid takes pending void v for one attempt, as read: it counts
	// the attempt and moves NextAttemptTime to next, provided v is still
	// pending and its NextAttemptTime unchanged.
	ClaimVoid(ctx context.Context, v PendingVoid, next time.Time) (bool, error)
	// CompleteRefund records that the provider returned pending refund r:
	// r becomes RefundDone and leaves the payment's PendingRefundUnits, in
	// one transaction with the events report returns for the payment as it
	// then stands. It returns that payment, and done false (and records
	// nothing) when r was not pending, completed already by another caller.
	CompleteRefund(ctx context.Context, r Refund, at time.Time, report func(p *Payment) []Event) (p *Payment, done bool, err error)
}
