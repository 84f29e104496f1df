package domain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// conflictRetries bounds how often an operation that lost a race to a
// concurrent writer is re-run before giving up.
const conflictRetries = 3

// Service is the payment service's use cases: charge, read, refund.
type Service struct {
	repo     Repository
	provider Provider
	// Now returns the current time; tests may replace it. Times are kept
	// to the microsecond, the precision the store keeps.
	Now func() time.Time
	// NewID returns a fresh identifier; tests may replace it.
	NewID func() string
}

// NewService returns a Service storing payments in repo and charging them
// through provider.
func NewService(repo Repository, provider Provider) *Service {
	return &Service{
		repo:     repo,
		provider: provider,
		Now:      func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		NewID:    newID,
	}
}

// Charge captures req.Amount through the provider, once per idempotency key.
//
// A repeat of a key with the same request returns the first outcome without
// charging again: the payment, or the same *DeclinedError. A repeat with a
// different request fails with ErrIdempotencyKeyReused. A declined charge is
// recorded and returned as *DeclinedError. A temporary provider failure is
// ErrProviderUnavailable and records nothing.
func (s *Service) Charge(ctx context.Context, req ChargeRequest) (*Payment, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	fp := req.fingerprint()
	prior, err := s.repo.ByIdempotencyKey(ctx, req.IdempotencyKey)
	switch {
	case err == nil:
		return replay(prior, fp)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}

	res, err := s.provider.Charge(ctx, ProviderCharge{IdempotencyKey: req.IdempotencyKey, Token: req.Token, Amount: req.Amount})
	switch {
	case errors.Is(err, ErrUnknownPaymentMethod):
		return nil, &FieldError{Field: "payment_method_token", Description: "unknown payment method token"}
	case err != nil:
		return nil, err
	}

	now := s.Now()
	p := &Payment{
		ID:             s.NewID(),
		Amount:         req.Amount,
		Status:         StatusCaptured,
		Reference:      req.Reference,
		IdempotencyKey: req.IdempotencyKey,
		Fingerprint:    fp,
		CreateTime:     now,
		UpdateTime:     now,
	}
	if !res.Approved {
		p.Status = StatusDeclined
		p.DeclineReason = res.DeclineReason
		if p.DeclineReason == "" {
			p.DeclineReason = ReasonDeclined
		}
	}
	if err := s.repo.Create(ctx, p); err != nil {
		if !errors.Is(err, ErrDuplicate) {
			return nil, err
		}
		// A concurrent request with the same key won the race; its outcome
		// is the outcome of this key.
		winner, err := s.repo.ByIdempotencyKey(ctx, req.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		return replay(winner, fp)
	}
	return outcome(p)
}

// replay returns the outcome of an earlier charge made with the same key,
// provided the request is the same.
func replay(p *Payment, fingerprint string) (*Payment, error) {
	if p.Fingerprint != fingerprint {
		return nil, ErrIdempotencyKeyReused
	}
	return outcome(p)
}

// outcome is what Charge returns for a recorded payment.
func outcome(p *Payment) (*Payment, error) {
	if p.Status == StatusDeclined {
		return nil, &DeclinedError{Reason: p.DeclineReason, PaymentID: p.ID}
	}
	return p, nil
}

// Payment returns the payment with the given id, or ErrNotFound.
func (s *Service) Payment(ctx context.Context, id string) (*Payment, error) {
	return s.repo.ByID(ctx, id)
}

// Refund returns money of a captured payment: req.Amount, or all that is
// left when nil. Refunds never add up to more than the charge, even when
// they race. With an idempotency key, a repeat refunds nothing more and
// returns the payment as it stands; the same key with another amount fails
// with ErrIdempotencyKeyReused.
func (s *Service) Refund(ctx context.Context, req RefundRequest) (*Payment, error) {
	if req.Amount != nil {
		if err := req.Amount.validatePositive("amount"); err != nil {
			return nil, err
		}
	}
	apply := func(p *Payment, prior *Refund) (*Refund, error) {
		if prior != nil {
			// A repeat: the same request gets the payment as it stands,
			// another one under the same key is refused.
			if prior.RequestedUnits != req.requestedUnits() || (req.Amount != nil && req.Amount.Currency != p.Amount.Currency) {
				return nil, ErrIdempotencyKeyReused
			}
			return nil, nil
		}
		now := s.Now()
		units, err := p.applyRefund(req.Amount, now)
		if err != nil {
			return nil, err
		}
		return &Refund{
			ID:             s.NewID(),
			PaymentID:      p.ID,
			Units:          units,
			RequestedUnits: req.requestedUnits(),
			IdempotencyKey: req.IdempotencyKey,
			CreateTime:     now,
		}, nil
	}
	for attempt := 1; ; attempt++ {
		p, err := s.repo.Refund(ctx, req.PaymentID, req.IdempotencyKey, apply)
		// ErrConflict: another refund of this payment committed in between.
		// ErrDuplicate: a concurrent repeat with the same key got there
		// first. Either way, decide again on the fresh state.
		raced := errors.Is(err, ErrConflict) || errors.Is(err, ErrDuplicate)
		switch {
		case raced && attempt < conflictRetries:
			continue
		case raced:
			return nil, fmt.Errorf("refund payment %s: %w", req.PaymentID, err)
		}
		return p, err
	}
}

// newID returns a version 7 UUID: time-ordered, so new rows land at the end
// of the primary-key index instead of all over it.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
