package domain

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// memRepo is an in-memory Repository for the domain's unit tests; the SQL
// store is tested against the same contract in package store.
type memRepo struct {
	mu        sync.Mutex
	payments  map[string]Payment
	refunds   []Refund
	cancelled map[string]bool
	events    []Event
	// raceWinner, when set, is stored by the next Create just before its
	// own insert, to simulate losing a race on the idempotency key.
	raceWinner *Payment
	// missOnce makes the next ByIdempotencyKey miss, as if the payment
	// were committed just after it looked.
	missOnce bool
	// createErrs fail the next Creates, one each, before they store.
	createErrs []error
	// claimErr, when set, fails every ClaimRefund.
	claimErr error
	// voids holds the cancelled keys' voids; markErr, when set, fails
	// every MarkVoidDue.
	voids   map[string]*memVoid
	markErr error
}

// memVoid is a cancelled key's void, as the store keeps it.
type memVoid struct {
	pending     bool
	marks       int64
	attempts    int
	since, next time.Time
}

func (r *memRepo) MarkVoidDue(_ context.Context, key string, at, next time.Time) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.markVoid(key, at, next)
}

// markVoid is MarkVoidDue with r.mu held.
func (r *memRepo) markVoid(key string, at, next time.Time) (int64, error) {
	if r.markErr != nil {
		return 0, r.markErr
	}
	if !r.cancelled[key] {
		return 0, ErrNotFound
	}
	if r.voids == nil {
		r.voids = map[string]*memVoid{}
	}
	v := r.voids[key]
	if v == nil {
		v = &memVoid{}
		r.voids[key] = v
	}
	if !v.pending {
		v.since, v.attempts = at, 0
	}
	v.pending, v.next = true, next
	v.marks++
	return v.marks, nil
}

func (r *memRepo) VoidDone(_ context.Context, key string, mark int64) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.voids[key]; v != nil && v.pending && v.marks == mark {
		v.pending = false
		return true, nil
	}
	return false, nil
}

func (r *memRepo) DueVoids(_ context.Context, at time.Time, limit int) ([]PendingVoid, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []PendingVoid
	for key, v := range r.voids {
		if v.pending && !v.next.After(at) {
			out = append(out, PendingVoid{Key: key, Mark: v.marks, Attempts: v.attempts, Since: v.since, NextAttemptTime: v.next})
		}
	}
	slices.SortFunc(out, func(a, b PendingVoid) int {
		if c := a.NextAttemptTime.Compare(b.NextAttemptTime); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out[:min(limit, len(out))], nil
}

func (r *memRepo) ClaimVoid(_ context.Context, pv PendingVoid, next time.Time) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.voids[pv.Key]
	if v == nil || !v.pending || !v.next.Equal(pv.NextAttemptTime) {
		return false, nil
	}
	v.attempts++
	v.next = next
	return true, nil
}

// voidPending reports whether key's void is still due.
func (r *memRepo) voidPending(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.voids[key]
	return v != nil && v.pending
}

func newMemRepo() *memRepo {
	return &memRepo{payments: map[string]Payment{}, cancelled: map[string]bool{}}
}

func (r *memRepo) Create(_ context.Context, p *Payment, evs ...Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.createErrs) > 0 {
		err := r.createErrs[0]
		r.createErrs = r.createErrs[1:]
		return err
	}
	if w := r.raceWinner; w != nil {
		r.raceWinner = nil
		r.payments[w.ID] = *w
	}
	if r.cancelled[p.IdempotencyKey] {
		// As the store does, in the refusal's own transaction.
		if _, err := r.markVoid(p.IdempotencyKey, p.CreateTime, p.CreateTime); err != nil {
			return err
		}
		return ErrChargeCancelled
	}
	for _, q := range r.payments {
		if q.IdempotencyKey == p.IdempotencyKey {
			return ErrDuplicate
		}
	}
	r.payments[p.ID] = *p
	r.events = append(r.events, evs...)
	return nil
}

func (r *memRepo) ChargeCancelled(_ context.Context, key string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelled[key], nil
}

func (r *memRepo) CancelUncharged(_ context.Context, key string, _ time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range r.payments {
		if q.IdempotencyKey == key {
			return ErrDuplicate
		}
	}
	r.cancelled[key] = true
	return nil
}

// recorded returns the events recorded so far.
func (r *memRepo) recorded() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *memRepo) ByID(_ context.Context, id string) (*Payment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.payments[id]
	if !ok {
		return nil, ErrNotFound
	}
	return &p, nil
}

func (r *memRepo) ByIdempotencyKey(_ context.Context, key string) (*Payment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.missOnce {
		r.missOnce = false
		return nil, ErrNotFound
	}
	for _, p := range r.payments {
		if p.IdempotencyKey == key {
			return &p, nil
		}
	}
	return nil, ErrNotFound
}

func (r *memRepo) Refund(_ context.Context, id, key string, apply func(*Payment, *Refund) (*Refund, []Event, error)) (*Payment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.payments[id]
	if !ok {
		return nil, ErrNotFound
	}
	var prior *Refund
	for i := range r.refunds {
		if key != "" && r.refunds[i].PaymentID == id && r.refunds[i].IdempotencyKey == key {
			prior = &r.refunds[i]
		}
	}
	rf, evs, err := apply(&p, prior)
	if err != nil {
		return nil, err
	}
	if rf != nil {
		r.refunds = append(r.refunds, *rf)
		r.payments[id] = p
		r.events = append(r.events, evs...)
	}
	return &p, nil
}

func (r *memRepo) PendingRefunds(_ context.Context, paymentID string, limit int) ([]Refund, error) {
	return r.pending(limit, func(rf Refund) bool { return rf.PaymentID == paymentID }, func(a, b Refund) int {
		return a.CreateTime.Compare(b.CreateTime)
	}), nil
}

func (r *memRepo) DueRefunds(_ context.Context, at time.Time, limit int) ([]Refund, error) {
	return r.pending(limit, func(rf Refund) bool { return !rf.NextAttemptTime.After(at) }, func(a, b Refund) int {
		return a.NextAttemptTime.Compare(b.NextAttemptTime)
	}), nil
}

// pending returns up to limit pending refunds that keep says to, sorted by
// order (then id), as the store does.
func (r *memRepo) pending(limit int, keep func(Refund) bool, order func(a, b Refund) int) []Refund {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Refund
	for _, rf := range r.refunds {
		if rf.Status == RefundPending && keep(rf) {
			out = append(out, rf)
		}
	}
	slices.SortStableFunc(out, func(a, b Refund) int {
		if c := order(a, b); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out[:min(limit, len(out))]
}

func (r *memRepo) ClaimRefund(_ context.Context, rf Refund, next time.Time) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.claimErr != nil {
		return false, r.claimErr
	}
	for i := range r.refunds {
		q := &r.refunds[i]
		if q.ID == rf.ID && q.Status == RefundPending && q.NextAttemptTime.Equal(rf.NextAttemptTime) {
			q.Attempts++
			q.NextAttemptTime = next
			return true, nil
		}
	}
	return false, nil
}

func (r *memRepo) CompleteRefund(_ context.Context, rf Refund, at time.Time, report func(*Payment) []Event) (*Payment, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.payments[rf.PaymentID]
	if !ok {
		return nil, false, ErrNotFound
	}
	for i := range r.refunds {
		if r.refunds[i].ID == rf.ID && r.refunds[i].Status == RefundPending {
			r.refunds[i].Status = RefundDone
			p.PendingRefundUnits -= r.refunds[i].Units
			if at.After(p.UpdateTime) {
				p.UpdateTime = at
			}
			r.payments[p.ID] = p
			r.events = append(r.events, report(&p)...)
			return &p, true, nil
		}
	}
	return &p, false, nil
}

// refundList returns the refunds recorded so far.
func (r *memRepo) refundList() []Refund {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Refund(nil), r.refunds...)
}

func (r *memRepo) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.payments)
}

// countingProvider wraps a Provider and counts charges, and records the
// keys voided.
type countingProvider struct {
	mu     sync.Mutex
	calls  int
	voided []string
	next   Provider
	// voidErrs fail the next Voids, one each.
	voidErrs []error
	// onCharge, when set, runs once the next has answered a charge;
	// onVoid before each void.
	onCharge func()
	onVoid   func(key string)
	// refundErrs fail the next Refunds, one each; refunded records the
	// refunds confirmed.
	refundErrs []error
	refunded   []ProviderRefund
}

func (c *countingProvider) Charge(ctx context.Context, ch ProviderCharge) (ProviderResult, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	res, err := c.next.Charge(ctx, ch)
	if c.onCharge != nil {
		c.onCharge()
	}
	return res, err
}

func (c *countingProvider) Void(ctx context.Context, key string) error {
	if c.onVoid != nil {
		c.onVoid(key)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.voidErrs) > 0 {
		err := c.voidErrs[0]
		c.voidErrs = c.voidErrs[1:]
		return err
	}
	c.voided = append(c.voided, key)
	return c.next.Void(ctx, key)
}

func (c *countingProvider) Refund(ctx context.Context, r ProviderRefund) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.refundErrs) > 0 {
		err := c.refundErrs[0]
		c.refundErrs = c.refundErrs[1:]
		return err
	}
	c.refunded = append(c.refunded, r)
	return c.next.Refund(ctx, r)
}

// refunds returns the refunds confirmed so far.
func (c *countingProvider) refunds() []ProviderRefund {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ProviderRefund(nil), c.refunded...)
}

// voids returns the keys voided so far.
func (c *countingProvider) voids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.voided...)
}

// tokenProvider is a minimal deterministic provider (the real one lives in
// package simulator, which imports this package).
type tokenProvider struct{}

func (tokenProvider) Charge(_ context.Context, c ProviderCharge) (ProviderResult, error) {
	switch c.Token {
	case "tok_approve":
		return ProviderResult{Approved: true}, nil
	case "tok_decline":
		return ProviderResult{DeclineReason: ReasonDeclined}, nil
	case "tok_insufficient":
		return ProviderResult{DeclineReason: ReasonInsufficientFunds}, nil
	case "tok_unavailable":
		return ProviderResult{}, ErrProviderUnavailable
	}
	return ProviderResult{}, ErrUnknownPaymentMethod
}

func (tokenProvider) Void(context.Context, string) error { return nil }

func (tokenProvider) Refund(context.Context, ProviderRefund) error { return nil }
