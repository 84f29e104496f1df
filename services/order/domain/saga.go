package domain

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"
)

// Step is a step of an order's saga.
type Step string

// The forward steps run in this order; on failure, compensation runs REFUND
// and RELEASE as needed (see Order.FailedStep), and every saga ends at DONE.
const (
	StepCheckUser Step = "CHECK_USER"
	StepPrice     Step = "PRICE"
	StepReserve   Step = "RESERVE"
	StepCharge    Step = "CHARGE"
	StepCommit    Step = "COMMIT"
	StepRefund    Step = "REFUND"
	StepRelease   Step = "RELEASE"
	StepDone      Step = "DONE"
)

// Compensating reports whether s undoes an earlier step. Compensation
// steps are retried until they succeed: they have no deadline.
func (s Step) Compensating() bool { return s == StepRefund || s == StepRelease }

// Defaults of SagaPolicy.
const (
	// DefaultStepTimeout is how long a forward step whose peer keeps failing
	// temporarily is retried before the saga compensates.
	DefaultStepTimeout = 30 * time.Second
	// DefaultCallTimeout bounds one call to a peer.
	DefaultCallTimeout = 10 * time.Second
	// DefaultInitialBackoff is the delay before the first retry of a step.
	DefaultInitialBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the delay between retries of a step.
	DefaultMaxBackoff = 5 * time.Second
)

// SagaPolicy bounds the saga's retries.
//
// A forward step (CHECK_USER, PRICE, RESERVE, CHARGE, COMMIT) that fails
// temporarily (the peer is unavailable, a call times out) is retried with
// exponential backoff and jitter, from InitialBackoff doubling up to
// MaxBackoff, until StepTimeout has passed since its first failure: the
// last attempt is made at that bound, and when it fails too the saga gives
// up. One attempt takes at most CallTimeout, so a step is given up at most
// StepTimeout + CallTimeout after it first failed. Giving up before anything was
// reserved ends the order CANCELLED; after, compensation runs. Compensation
// steps (REFUND, RELEASE) retry with the same backoff until they succeed.
type SagaPolicy struct {
	// StepTimeout is how long a forward step is retried; DefaultStepTimeout when zero.
	StepTimeout time.Duration
	// CallTimeout bounds one call to a peer; DefaultCallTimeout when zero.
	CallTimeout time.Duration
	// InitialBackoff is the first retry delay; DefaultInitialBackoff when zero.
	InitialBackoff time.Duration
	// MaxBackoff caps retry delays, a peer's RetryInfo included;
	// DefaultMaxBackoff when zero.
	MaxBackoff time.Duration
}

// WithDefaults returns p with zero durations replaced by the defaults.
func (p SagaPolicy) WithDefaults() SagaPolicy {
	if p.StepTimeout <= 0 {
		p.StepTimeout = DefaultStepTimeout
	}
	if p.CallTimeout <= 0 {
		p.CallTimeout = DefaultCallTimeout
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	return p
}

// Backoff returns the delay before retrying after the given number of
// failed attempts (1 or more): InitialBackoff doubled per earlier failure,
// at least the peer's hint, capped at MaxBackoff, then jittered into
// [d/2, d] so that orders failing together do not retry together.
func (p SagaPolicy) Backoff(attempts int, hint time.Duration, jitter func(time.Duration) time.Duration) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < attempts && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = max(d, hint)
	d = min(d, p.MaxBackoff)
	return d/2 + jitter(d-d/2)
}

// randomJitter returns a random duration in [0, d].
func randomJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// enter starts step at now. The step's retry bound starts at its first
// failure, not here: time spent queued behind other sagas must not count
// against a peer, or a backlog would give steps up after one attempt.
func (o *Order) enter(step Step, now time.Time) {
	o.Step, o.Attempts, o.NextAttempt, o.LastError, o.UpdateTime = step, 0, now, "", now
	o.StepDeadline = time.Time{}
}

// finish ends the saga with status and reason ("" keeps the reason set
// when compensation began; CONFIRMED clears it).
func (o *Order) finish(status Status, reason string, now time.Time) {
	o.Status, o.Step, o.Attempts, o.UpdateTime = status, StepDone, 0, now
	o.NextAttempt, o.StepDeadline = time.Time{}, time.Time{}
	switch {
	case status == StatusConfirmed:
		o.FailureReason, o.FailedStep = "", ""
	case reason != "":
		o.FailureReason = reason
	}
}

// compensate starts compensation of the failed forward step with first,
// for reason.
func (o *Order) compensate(failed, first Step, reason string, now time.Time) {
	o.FailedStep, o.FailureReason = failed, reason
	o.enter(first, now)
}

// afterRefund is where compensation goes once the charge is cancelled.
func (o *Order) afterRefund(now time.Time) {
	if o.FailedStep == StepCommit {
		// The reservation was released first (see afterRelease).
		o.finish(StatusCancelled, "", now)
		return
	}
	o.enter(StepRelease, now)
}

// afterRelease is where compensation goes once the stock is released.
func (o *Order) afterRelease(now time.Time) {
	if o.FailedStep == StepReserve && refusedAtReserve(o.FailureReason) {
		// The release only guarded against a late reservation (see run).
		o.finish(StatusRejected, "", now)
		return
	}
	if o.FailedStep == StepCommit {
		// After a failed commit the stock is released before the charge is
		// refunded, because only the release tells whether the commit went
		// through after all (see Service.release).
		o.enter(StepRefund, now)
		return
	}
	o.finish(StatusCancelled, "", now)
}

// refusedAtReserve reports whether reason is inventory's refusal of a
// reservation, which ends an order REJECTED, not CANCELLED.
func refusedAtReserve(reason string) bool {
	return reason == FailureOutOfStock || reason == FailureProductNotFound
}

// giveUp ends a forward step that kept failing past its deadline.
func (o *Order) giveUp(now time.Time) {
	switch o.Step {
	case StepCheckUser:
		o.finish(StatusCancelled, FailureUsersUnavailable, now)
	case StepPrice:
		o.finish(StatusCancelled, FailureInventoryUnavailable, now)
	case StepReserve:
		// The reservation may have been made; releasing also blocks a late one.
		o.compensate(StepReserve, StepRelease, FailureInventoryUnavailable, now)
	case StepCharge:
		// The charge may have been made; cancelling it also blocks a late one.
		o.compensate(StepCharge, StepRefund, FailurePaymentUnavailable, now)
	case StepCommit:
		o.compensate(StepCommit, StepRelease, FailureInventoryUnavailable, now)
	}
}

// maxErrorLen bounds LastError, and what else a peer sends that is stored.
const maxErrorLen = 500

// Step runs the current saga step of the order with the given id once and
// stores what came of it. It returns the order as stored afterwards, and
// whether this call moved it to another step or status. An order that is
// terminal, or whose next attempt is not due yet, is returned unchanged.
//
// A step that fails temporarily stores the failed attempt and when to try
// again (NextAttempt); the caller waits until then and calls Step again.
// The only errors are the store's and ctx's: when ctx ends during a call
// to a peer nothing is stored, and the step is run again later — every step
// is idempotent on the order id.
func (s *Service) Step(ctx context.Context, id string) (*Order, bool, error) {
	o, err := s.repo.ByID(ctx, id)
	if err != nil {
		return nil, false, err
	}
	return s.StepFrom(ctx, o)
}

// StepFrom is Step for an order the caller already holds as it was stored:
// the order Create returned, or one a previous Step or StepFrom returned.
// A runner that drives a saga step after step passes each result on and
// saves the read before every step. o is not changed.
//
// Holding o does not make it current: when the stored order has moved on
// (another runner stepped it), Save's version check refuses the change, as
// it does for two runners that read the same version, and StepFrom returns
// the order as stored now. The step's call to the peer may then have been
// made twice, which every step tolerates.
func (s *Service) StepFrom(ctx context.Context, o *Order) (*Order, bool, error) {
	id := o.ID
	if o.Status.Terminal() || s.Now().Before(o.NextAttempt) {
		return o, false, nil
	}
	if s.StepContext != nil {
		ctx = s.StepContext(ctx, o)
	}
	next := o.Clone()
	pricesChanged, err := s.run(ctx, next)
	if err != nil {
		return nil, false, err
	}
	next.Version = o.Version + 1
	if err := s.repo.Save(ctx, next, o.Version, pricesChanged); err != nil {
		if errors.Is(err, ErrConflict) {
			// Another runner moved the saga on; carry on from there.
			o, err := s.repo.ByID(ctx, id)
			return o, false, err
		}
		return nil, false, err
	}
	if s.Notifier != nil {
		s.Notifier.Publish(next)
	}
	moved := next.Step != o.Step || next.Status != o.Status
	if moved && next.Status.Terminal() {
		s.log.InfoContext(ctx, "order saga ended", "order_id", id, "status", next.Status, "failure_reason", next.FailureReason)
	}
	return next, moved, nil
}

// run makes one attempt at o's step and applies its outcome to o. It
// reports whether the items' prices changed.
func (s *Service) run(ctx context.Context, o *Order) (bool, error) {
	callCtx, cancel := context.WithTimeout(ctx, s.policy.CallTimeout)
	defer cancel()
	now := func() time.Time { return s.Now() }
	var (
		err           error
		pricesChanged bool
	)
	switch o.Step {
	case StepCheckUser:
		err = s.users.CheckUser(callCtx, o.UserID)
		switch {
		case err == nil:
			o.enter(StepPrice, now())
		case errors.Is(err, ErrUserNotFound):
			o.finish(StatusRejected, FailureUserNotFound, now())
			err = nil
		}
	case StepPrice:
		var prices map[string]Money
		prices, err = s.inventory.Prices(callCtx, o.SKUs())
		switch {
		case err == nil:
			pricesChanged = true
			if reason := o.price(prices); reason != "" {
				o.finish(StatusRejected, reason, now())
			} else {
				o.enter(StepReserve, now())
			}
		case errors.Is(err, ErrProductNotFound):
			o.LastError = truncate(err.Error())
			o.finish(StatusRejected, FailureProductNotFound, now())
			err = nil
		}
	case StepReserve:
		err = s.inventory.Reserve(callCtx, o.ID, o.StockLines())
		switch {
		case err == nil:
			o.enter(StepCharge, now())
		case errors.Is(err, ErrOutOfStock), errors.Is(err, ErrProductNotFound):
			// Refused, and nothing is held. Yet a runner holding an older
			// copy of the order may be reserving for it right now
			// (StepFrom), and once stock is back its reservation would
			// stay held for an order that has ended. Releasing leaves
			// inventory a tombstone that refuses such a late reservation,
			// or undoes one made already; afterRelease then ends the order
			// REJECTED.
			reason := FailureOutOfStock
			if errors.Is(err, ErrProductNotFound) {
				reason = FailureProductNotFound
			}
			o.compensate(StepReserve, StepRelease, reason, now())
			o.LastError = truncate(err.Error())
			err = nil
		case errors.Is(err, ErrReservationReleased):
			// Nothing is held and nothing can be: there is nothing to undo.
			o.finish(StatusCancelled, FailureReservationReleased, now())
			err = nil
		}
	case StepCharge:
		var res PaymentResult
		res, err = s.payments.Charge(callCtx, PaymentCharge{
			IdempotencyKey: PaymentKey(o),
			Token:          o.PaymentToken,
			Reference:      o.ID,
			UserID:         o.UserID,
			Amount:         o.Total,
		})
		switch {
		case err == nil && res.Declined:
			reason := truncate(res.DeclineReason)
			if reason == "" {
				reason = FailurePaymentDeclined
			}
			o.PaymentID = truncate(res.PaymentID)
			o.compensate(StepCharge, StepRelease, reason, now())
		case err == nil:
			o.PaymentID = truncate(res.PaymentID)
			o.enter(StepCommit, now())
		case errors.Is(err, ErrInvalidPaymentMethod):
			// Nothing was charged by this call, but another run of this
			// step (a replica's sweep, a retry whose answer was lost)
			// may still charge under the key: cancelling it blocks the
			// key or undoes that charge before the stock is released.
			o.compensate(StepCharge, StepRefund, FailureInvalidPaymentMethod, now())
			err = nil
		case errors.Is(err, ErrChargeRefused):
			// Money may have moved under the key for another request:
			// cancel whatever was charged, then release.
			o.LastError = truncate(err.Error())
			o.compensate(StepCharge, StepRefund, FailurePaymentRefused, now())
			err = nil
		}
	case StepCommit:
		err = s.inventory.Commit(callCtx, o.ID)
		switch {
		case err == nil:
			o.finish(StatusConfirmed, "", now())
		case errors.Is(err, ErrReservationReleased):
			o.compensate(StepCommit, StepRelease, FailureReservationReleased, now())
			err = nil
		}
	case StepRefund:
		var paymentID string
		paymentID, err = s.payments.CancelCharge(callCtx, PaymentKey(o))
		if err == nil {
			if paymentID != "" {
				o.PaymentID = truncate(paymentID)
			}
			o.afterRefund(now())
		}
	case StepRelease:
		err = s.inventory.Release(callCtx, o.ID)
		switch {
		case err == nil:
			o.afterRelease(now())
		case errors.Is(err, ErrReservationCommitted) && o.FailedStep == StepCommit:
			// The commit whose answer was lost went through: the stock is
			// sold and the charge (not refunded yet) pays for it. Going
			// forward is the consistent end.
			s.log.WarnContext(ctx, "order saga: commit had succeeded; confirming instead of compensating", "order_id", o.ID)
			o.LastError = "stock commit had succeeded"
			o.finish(StatusConfirmed, "", now())
			err = nil
		case errors.Is(err, ErrReservationCommitted):
			// Only this saga commits, and only after a charge: it cannot
			// be. Keep retrying, loudly, rather than end inconsistent.
			s.log.ErrorContext(ctx, "order saga: reservation committed during compensation", "order_id", o.ID, "failed_step", o.FailedStep)
		}
	default:
		return false, fmt.Errorf("order %s: unknown saga step %q", o.ID, o.Step)
	}
	if err == nil {
		return pricesChanged, nil
	}
	if ctx.Err() != nil {
		// The runner is stopping: the outcome is unknown and the step will
		// be run again.
		return false, ctx.Err()
	}
	s.failed(ctx, o, err)
	return false, nil
}

// failed records a failed attempt at o's step and when to try again, or
// gives the step up when it is a forward step past its deadline.
func (s *Service) failed(ctx context.Context, o *Order, err error) {
	now := s.Now()
	o.Attempts++
	o.LastError = truncate(err.Error())
	var hint time.Duration
	if re := (*RetryableError)(nil); errors.As(err, &re) {
		hint = re.RetryAfter
	} else {
		s.log.WarnContext(ctx, "order saga step failed", "order_id", o.ID, "step", o.Step, "attempt", o.Attempts, "error", err)
	}
	if refused := (*RefusedError)(nil); errors.As(err, &refused) && !o.Step.Compensating() {
		// Asking again gets the same answer: compensate now, as at the
		// bound. A charge refused this way may still have been made
		// under the key (another request's): cancel it as for
		// ErrChargeRefused.
		s.log.WarnContext(ctx, "order saga step refused by its peer; giving up", "order_id", o.ID, "step", o.Step, "error", err)
		last := o.LastError
		if o.Step == StepCharge {
			o.compensate(StepCharge, StepRefund, FailurePaymentRefused, now)
		} else {
			o.giveUp(now)
		}
		o.LastError = last
		return
	}
	if !o.Step.Compensating() && o.StepDeadline.IsZero() {
		o.StepDeadline = now.Add(s.policy.StepTimeout)
	}
	if !o.Step.Compensating() && !now.Before(o.StepDeadline) {
		s.log.WarnContext(ctx, "order saga step given up", "order_id", o.ID, "step", o.Step, "attempts", o.Attempts, "error", err)
		last := o.LastError
		o.giveUp(now)
		o.LastError = last
		return
	}
	o.NextAttempt = now.Add(s.policy.Backoff(o.Attempts, hint, s.Jitter))
	if !o.Step.Compensating() && o.NextAttempt.After(o.StepDeadline) {
		// One last attempt at the bound.
		o.NextAttempt = o.StepDeadline
	}
	o.UpdateTime = now
}

// truncate cuts s, text a peer sent (an error message, a decline reason,
// a payment id), to at most maxErrorLen bytes of valid UTF-8 without NUL
// (PostgreSQL refuses anything else in a TEXT column, and the order's
// every save would fail).
func truncate(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "?"), "\x00", "?")
	if len(s) <= maxErrorLen {
		return s
	}
	cut := maxErrorLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
