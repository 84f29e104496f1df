package domain

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	// RefundFailed, when set, hears of each refund asked of the provider
	// and not completed: the provider refused or failed, or recording its
	// confirmation did. The refund stays pending and is asked again
	// (ResumeRefunds); operators may want to know meanwhile.
	RefundFailed func(ctx context.Context, r Refund, err error)
	// VoidFailed, when set, hears of each void ResumeVoids asked of the
	// provider and did not complete; the key stays due and is voided
	// again later.
	VoidFailed func(ctx context.Context, v PendingVoid, err error)
	// RefundRetry is how long a new refund (or a void of a cancelled key)
	// is left to the request that made it before ResumeRefunds (or
	// ResumeVoids) may ask the provider again; the wait doubles after each
	// attempt, up to MaxRefundRetry. Zero means DefaultRefundRetry.
	RefundRetry time.Duration
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

// Charge captures req.Amount through the provider, once per idempotency key,
// and reports it (EventCaptured or EventDeclined) with the payment.
//
// A repeat of a key with the same request returns the first outcome without
// charging again: the payment, or the same *DeclinedError. A repeat with a
// different request fails with ErrIdempotencyKeyReused. A key cancelled by
// CancelCharge before any charge fails with ErrChargeCancelled, once the
// provider has voided the key (whatever a charge racing the cancel
// captured). A declined charge is recorded and returned as *DeclinedError.
// A temporary provider failure is ErrProviderUnavailable and records
// nothing.
func (s *Service) Charge(ctx context.Context, req ChargeRequest) (*Payment, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	req.UserID = lowerUUID(req.UserID)
	fp := req.fingerprint()
	prior, err := s.repo.ByIdempotencyKey(ctx, req.IdempotencyKey)
	switch {
	case err == nil:
		return replay(prior, fp)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	// Checked before the provider is asked, so a cancelled key never moves
	// money; Create checks again atomically for a cancel racing this charge.
	if cancelled, err := s.repo.ChargeCancelled(ctx, req.IdempotencyKey); err != nil {
		return nil, err
	} else if cancelled {
		// Voided again: this may be the repeat of a charge whose provider
		// call captured after the cancel and whose void failed.
		return nil, s.voidCancelled(ctx, req.IdempotencyKey)
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
		UserID:         req.UserID,
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
	// The provider has answered: record what it did even if the caller
	// went away or its deadline passed meanwhile. Otherwise money it
	// captured would have no payment, and the CancelCharge of its key (the
	// order saga's compensation) would find nothing to refund.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := s.record(ctx, p); err != nil {
		if errors.Is(err, ErrChargeCancelled) {
			// A CancelCharge won the race, after the provider took this
			// charge or before: either way what it captured is undone,
			// here, since the cancel's own void may have come before the
			// capture and its caller (a saga compensating) is done.
			return nil, s.voidCaptured(ctx, req.IdempotencyKey)
		}
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

// voidCancelled has the provider void a cancelled key and returns
// ErrChargeCancelled, or the void's error: that one is temporary, so the
// caller sends the charge again and it is voided then (and ResumeVoids
// voids it meanwhile).
func (s *Service) voidCancelled(ctx context.Context, key string) error {
	if err := s.voidKey(ctx, key, s.provider.Void); err != nil {
		return fmt.Errorf("void the cancelled key %s at the provider: %w", key, err)
	}
	return ErrChargeCancelled
}

// voidKey has void void cancelled key at the provider, the void recorded
// due first (MarkVoidDue): one that fails, or a process that stops before
// it is done, leaves the key to ResumeVoids, which voids it later,
// durably. Once voided the key is recorded done, unless marked again
// meanwhile. A mark that cannot be recorded (the database away) does not
// stop the void: money moved back matters more than the record.
func (s *Service) voidKey(ctx context.Context, key string, void func(context.Context, string) error) error {
	now := s.Now()
	mark, markErr := s.repo.MarkVoidDue(ctx, key, now, now.Add(s.retryDelay(1)))
	if err := void(ctx, key); err != nil {
		if markErr != nil {
			return errors.Join(err, fmt.Errorf("and recording the void due failed: %w", markErr))
		}
		return err
	}
	if markErr == nil {
		// On a context of its own: the void's retries may have used up
		// the caller's. Not recorded, the key stays due and ResumeVoids
		// voids it again, which the provider takes as a no-op.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		_, _ = s.repo.VoidDone(ctx, key, mark)
	}
	return nil
}

// voidAttempts bounds the voids voidCaptured tries, voidBackoff apart
// and then twice that each time, within recordTimeout.
const (
	voidAttempts = 5
	voidBackoff  = 50 * time.Millisecond
)

// voidCaptured voids what the provider captured under a key cancelled
// meanwhile and returns ErrChargeCancelled. Its caller may be gone, and
// nobody else knows of the capture, so a void that fails is tried again;
// after voidAttempts it returns ErrNotVoided, which the service logs for
// the operators, the key left due for ResumeVoids (the same charge again
// voids it too).
func (s *Service) voidCaptured(ctx context.Context, key string) error {
	if err := s.voidKey(ctx, key, s.voidRetrying); err != nil {
		return fmt.Errorf("%w (key %s): %v", ErrNotVoided, key, err)
	}
	return ErrChargeCancelled
}

// voidRetrying voids key, trying voidAttempts times, voidBackoff apart and
// then twice that each time, and returns the last error.
func (s *Service) voidRetrying(ctx context.Context, key string) error {
	var err error
	wait := voidBackoff
	for attempt := 1; ; attempt++ {
		if err = s.provider.Void(ctx, key); err == nil || attempt == voidAttempts {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

// record stores p, the outcome of a charge the provider has answered,
// trying again when storing fails for another reason than the key (a lost
// race with another transaction, say): the caller must not be told that
// nothing happened when money may have moved. Failing conflictRetries
// times, it returns ErrNotRecorded.
func (s *Service) record(ctx context.Context, p *Payment) error {
	var err error
	for attempt := 1; attempt <= conflictRetries; attempt++ {
		err = s.repo.Create(ctx, p, chargedEvent(p))
		if err == nil || errors.Is(err, ErrDuplicate) || errors.Is(err, ErrChargeCancelled) {
			return err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("%w (key %s): %w", ErrNotRecorded, p.IdempotencyKey, err)
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
// they race. The refund is recorded pending, then the provider is asked to
// return the money, and once it has the refund is done and reported
// (EventRefunded). A provider that fails leaves it pending, in the payment's
// RefundPending, and it is asked again (ResumeRefunds, or a repeat): the
// refund is decided, so Refund still returns the payment. With an
// idempotency key, a repeat refunds nothing more and returns the payment as
// it stands; the same key with another amount fails with
// ErrIdempotencyKeyReused.
func (s *Service) Refund(ctx context.Context, req RefundRequest) (*Payment, error) {
	if req.Amount != nil {
		if err := req.Amount.validatePositive("amount"); err != nil {
			return nil, err
		}
	}
	apply := func(p *Payment, prior *Refund) (*Refund, []Event, error) {
		if prior != nil {
			// A repeat: the same request gets the payment as it stands,
			// another one under the same key is refused.
			if prior.RequestedUnits != req.requestedUnits() || (req.Amount != nil && req.Amount.Currency != p.Amount.Currency) {
				return nil, nil, ErrIdempotencyKeyReused
			}
			return nil, nil, nil
		}
		return s.refund(p, req.Amount, req.requestedUnits(), req.IdempotencyKey)
	}
	p, err := s.refundRetrying(ctx, req.PaymentID, req.IdempotencyKey, apply)
	if err != nil {
		return nil, err
	}
	return s.settle(ctx, p), nil
}

// refund applies a refund of amount (all that remains when nil) to p and
// returns the refund to record, pending. Its event waits for the provider
// (completeRefund).
func (s *Service) refund(p *Payment, amount *Money, requested int64, key string) (*Refund, []Event, error) {
	now := s.Now()
	units, err := p.applyRefund(amount, now)
	if err != nil {
		return nil, nil, err
	}
	r := &Refund{
		ID:             s.NewID(),
		PaymentID:      p.ID,
		Units:          units,
		RequestedUnits: requested,
		IdempotencyKey: key,
		Status:         RefundPending,
		CreateTime:     now,
		// Left to the request that records it (settle) until then.
		NextAttemptTime: now.Add(s.retryDelay(1)),
	}
	return r, nil, nil
}

// settleBatch bounds the pending refunds of one payment settle asks for
// in one call; more than a few means the provider is failing, and the
// rest wait for ResumeRefunds.
const settleBatch = 20

// settleBudget bounds the time a Refund or CancelCharge spends asking the
// provider (and recording its answer) before it answers, and half the
// caller's remaining deadline does when that is shorter: the refund is
// decided already, and a caller that timed out waiting for a slow provider
// would take its DEADLINE_EXCEEDED for "nothing happened" and, without a
// key, refund again (a saga compensating would retry the cancel for ever).
// Below minSettle it does not try: the refund waits for ResumeRefunds.
const (
	settleBudget = 2 * time.Second
	minSettle    = 50 * time.Millisecond
)

// settle asks the provider to return p's pending refunds and records those
// it confirms, within settleBudget, even if the caller goes away meanwhile.
// A refund not completed in time stays pending, for ResumeRefunds: settle
// reports it to RefundFailed and returns the payment as it stands, its
// RefundPending saying what is unconfirmed. No error goes back to the
// caller, who might take it for "nothing happened".
func (s *Service) settle(ctx context.Context, p *Payment) *Payment {
	if p.PendingRefundUnits == 0 {
		return p
	}
	budget := settleBudget
	if deadline, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(deadline)/2)
	}
	if budget < minSettle {
		return p
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	// An error here (the database away) leaves the refunds to
	// ResumeRefunds, as a slow provider does.
	pending, _ := s.repo.PendingRefunds(ctx, p.ID, settleBatch)
	for _, r := range pending {
		if ctx.Err() != nil {
			break // out of time: the rest wait for ResumeRefunds
		}
		q, _, err := s.completeRefund(ctx, p, r)
		if err != nil {
			s.refundFailed(ctx, r, err)
			continue
		}
		p = q
	}
	return p
}

// completeRefund asks the provider to return pending refund r of p and,
// once it has, records r done with its event, both within ctx: a
// confirmation not recorded leaves r pending, and the provider, asked
// again, returns the money once. It returns the payment as it then
// stands, and whether this call recorded it (false when another caller
// had).
func (s *Service) completeRefund(ctx context.Context, p *Payment, r Refund) (*Payment, bool, error) {
	err := s.provider.Refund(ctx, ProviderRefund{
		IdempotencyKey: r.ID,
		ChargeKey:      p.IdempotencyKey,
		Amount:         Money{Currency: p.Amount.Currency, Units: r.Units},
	})
	if err != nil {
		return nil, false, fmt.Errorf("refund %s at the provider: %w", r.ID, err)
	}
	q, done, err := s.repo.CompleteRefund(ctx, r, s.Now(), func(p *Payment) []Event {
		return []Event{refundedEvent(p, &r)}
	})
	if err != nil {
		return nil, false, fmt.Errorf("refund %s: the provider confirmed it, recording that failed: %w", r.ID, err)
	}
	return q, done, nil
}

// refundFailed passes a refund not completed to RefundFailed.
func (s *Service) refundFailed(ctx context.Context, r Refund, err error) {
	if s.RefundFailed != nil {
		s.RefundFailed(ctx, r, err)
	}
}

// DefaultRefundRetry is Service.RefundRetry's default, and MaxRefundRetry
// bounds the wait between attempts as it doubles.
const (
	DefaultRefundRetry = 30 * time.Second
	MaxRefundRetry     = time.Hour
)

// retryDelay is the n-th wait of a pending refund: RefundRetry after it
// was made (n = 1), doubling after each attempt ResumeRefunds makes, at
// most MaxRefundRetry.
func (s *Service) retryDelay(n int) time.Duration {
	d := s.RefundRetry
	if d <= 0 {
		d = DefaultRefundRetry
	}
	for i := 1; i < n && d < MaxRefundRetry; i++ {
		d *= 2
	}
	return min(d, MaxRefundRetry)
}

// ResumeRefunds asks the provider again for up to limit pending refunds
// that are due (NextAttemptTime passed), in the order they fell due: those
// it failed to confirm, and those left by a process that stopped between
// recording a refund and the provider's answer. Each is claimed first
// (ClaimRefund), which counts the attempt and sets the next one after
// retryDelay from the claim, so that of replicas resuming at once one
// asks, and a refund the provider keeps refusing waits longer each time
// instead of holding up the others. Each refund's provider call and record
// are bounded by recordTimeout. It returns how many refunds it completed,
// and more when limit were due (so more may be). A claim that fails (the
// database refusing writes) ends the call with its error: the same refunds
// would be due again at once.
func (s *Service) ResumeRefunds(ctx context.Context, limit int) (completed int, more bool, err error) {
	due, err := s.repo.DueRefunds(ctx, s.Now(), limit)
	if err != nil {
		return 0, false, fmt.Errorf("resume refunds: %w", err)
	}
	for _, r := range due {
		claimed, err := s.repo.ClaimRefund(ctx, r, s.Now().Add(s.retryDelay(r.Attempts+2)))
		if err != nil {
			return completed, false, fmt.Errorf("resume refunds: claim refund %s: %w", r.ID, err)
		}
		if !claimed {
			continue // another replica's, or completed meanwhile
		}
		r.Attempts++
		done, err := s.resume(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return completed, false, ctx.Err()
			}
			s.refundFailed(ctx, r, err)
			continue
		}
		if done {
			completed++
		}
	}
	return completed, len(due) == limit, nil
}

// ResumeVoids asks the provider again, as ResumeRefunds does for refunds,
// to void up to limit cancelled keys whose void is due: those a void
// failed for, and those left by a process that stopped before the
// provider answered. Each is claimed first (ClaimVoid), the next attempt
// set after retryDelay, and voided within recordTimeout; a void that fails
// is reported to VoidFailed. It returns how many keys it voided and
// recorded done (one marked again meanwhile stays due), and more when
// limit were due. A claim that fails ends the call with its error.
func (s *Service) ResumeVoids(ctx context.Context, limit int) (voided int, more bool, err error) {
	due, err := s.repo.DueVoids(ctx, s.Now(), limit)
	if err != nil {
		return 0, false, fmt.Errorf("resume voids: %w", err)
	}
	for _, v := range due {
		claimed, err := s.repo.ClaimVoid(ctx, v, s.Now().Add(s.retryDelay(v.Attempts+2)))
		if err != nil {
			return voided, false, fmt.Errorf("resume voids: claim key %s: %w", v.Key, err)
		}
		if !claimed {
			continue
		}
		v.Attempts++
		done, err := s.resumeVoid(ctx, v)
		if err != nil {
			if ctx.Err() != nil {
				return voided, false, ctx.Err()
			}
			if s.VoidFailed != nil {
				s.VoidFailed(ctx, v, err)
			}
			continue
		}
		if done {
			voided++
		}
	}
	return voided, len(due) == limit, nil
}

// resumeVoid voids one claimed key within recordTimeout and records it,
// reporting whether the record took (not when the key was marked again).
func (s *Service) resumeVoid(ctx context.Context, v PendingVoid) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if err := s.provider.Void(ctx, v.Key); err != nil {
		return false, fmt.Errorf("void key %s at the provider: %w", v.Key, err)
	}
	done, err := s.repo.VoidDone(ctx, v.Key, v.Mark)
	if err != nil {
		return false, fmt.Errorf("key %s: the provider voided it, recording that failed: %w", v.Key, err)
	}
	return done, nil
}

// resume completes one claimed refund within recordTimeout. It reports
// whether it recorded the refund done.
func (s *Service) resume(ctx context.Context, r Refund) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	p, err := s.repo.ByID(ctx, r.PaymentID)
	if err != nil {
		return false, fmt.Errorf("read payment %s: %w", r.PaymentID, err)
	}
	_, done, err := s.completeRefund(ctx, p, r)
	return done, err
}

// refundRetrying runs repo.Refund, deciding again when it lost a race.
func (s *Service) refundRetrying(ctx context.Context, id, key string, apply func(*Payment, *Refund) (*Refund, []Event, error)) (*Payment, error) {
	for attempt := 1; ; attempt++ {
		p, err := s.repo.Refund(ctx, id, key, apply)
		// ErrConflict: another refund of this payment committed in between.
		// ErrDuplicate: a concurrent repeat with the same key got there
		// first. Either way, decide again on the fresh state.
		raced := errors.Is(err, ErrConflict) || errors.Is(err, ErrDuplicate)
		switch {
		case raced && attempt < conflictRetries:
			continue
		case raced:
			return nil, fmt.Errorf("refund payment %s: %w", id, err)
		}
		return p, err
	}
}

// CancelCharge undoes the charge made with idempotency key, whatever
// happened to it, for a caller (a saga compensating) that may not know:
//
//   - captured, partly refunded: the rest is refunded as Refund does (and
//     reported, EventRefunded, once the provider returned it) and the
//     payment returned;
//   - already refunded or declined: nothing to do but ask the provider
//     again for refunds still pending; the payment is returned;
//   - no payment recorded: the key is recorded as cancelled, so a later
//     Charge with it fails with ErrChargeCancelled, and the provider voids
//     it, which undoes a capture whose payment could not be recorded (the
//     store down when the provider answered); the payment returned is nil.
//     A void that fails temporarily fails the cancel, to be sent again.
//
// Repeats are no-ops with the same result.
func (s *Service) CancelCharge(ctx context.Context, key string) (*Payment, error) {
	if key == "" {
		return nil, &FieldError{Field: "idempotency_key", Description: "must not be empty"}
	}
	apply := func(p *Payment, _ *Refund) (*Refund, []Event, error) {
		if p.Remaining() == 0 {
			return nil, nil, nil // declined, or refunded already
		}
		return s.refund(p, nil, 0, "")
	}
	for attempt := 1; ; attempt++ {
		p, err := s.repo.ByIdempotencyKey(ctx, key)
		switch {
		case err == nil:
			p, err := s.refundRetrying(ctx, p.ID, "", apply)
			if err != nil {
				return nil, err
			}
			return s.settle(ctx, p), nil
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
		err = s.repo.CancelUncharged(ctx, key, s.Now())
		switch {
		case err == nil:
			if err := s.voidKey(ctx, key, s.provider.Void); err != nil {
				return nil, fmt.Errorf("cancel charge: void key %s at the provider: %w", key, err)
			}
			return nil, nil
		case errors.Is(err, ErrDuplicate) && attempt < conflictRetries:
			// A charge with the key committed in between: undo it instead.
			continue
		default:
			return nil, fmt.Errorf("cancel charge: %w", err)
		}
	}
}

// lowerUUID returns id in lower case when it is a UUID, and as it is
// otherwise. The contract takes only UUIDs (or nothing), which are
// case-insensitive (RFC 9562), and every other service keeps them lowered:
// an upper-case one stored as sent filed the refund's notification under
// an id the user's listing never asks for.
func lowerUUID(id string) string {
	if len(id) == 36 {
		if _, err := uuid.Parse(id); err == nil {
			return strings.ToLower(id)
		}
	}
	return id
}

// recordTimeout bounds recording a charge or a refund the provider has
// answered, once the caller's own deadline no longer applies, and each
// provider call ResumeRefunds makes.
const recordTimeout = 10 * time.Second

// newID returns a version 7 UUID: time-ordered, so new rows land at the end
// of the primary-key index instead of all over it.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
