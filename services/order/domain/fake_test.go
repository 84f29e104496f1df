package domain

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// memRepo is an in-memory Repository for the domain's unit tests; the SQL
// store is tested against the same contract in package store.
type memRepo struct {
	mu     sync.Mutex
	orders map[string]Order
	// raceWinner, when set, is stored by the next Create just before its
	// own insert, to simulate losing a race on the idempotency key.
	raceWinner *Order
}

func newMemRepo() *memRepo { return &memRepo{orders: map[string]Order{}} }

func (r *memRepo) Create(_ context.Context, o *Order) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.raceWinner; w != nil {
		r.raceWinner = nil
		r.orders[w.ID] = *w
	}
	for _, q := range r.orders {
		if q.IdempotencyKey == o.IdempotencyKey {
			return ErrDuplicate
		}
	}
	r.orders[o.ID] = *o
	return nil
}

func (r *memRepo) ByID(_ context.Context, id string) (*Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.orders[id]
	if !ok {
		return nil, ErrNotFound
	}
	return &o, nil
}

func (r *memRepo) ByIdempotencyKey(_ context.Context, key string) (*Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.orders {
		if o.IdempotencyKey == key {
			return &o, nil
		}
	}
	return nil, ErrNotFound
}

func (r *memRepo) Update(_ context.Context, id string, change func(*Order) error) (*Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.orders[id]
	if !ok {
		return nil, ErrNotFound
	}
	if err := change(&o); err != nil {
		return nil, err
	}
	r.orders[id] = o
	return &o, nil
}

func (r *memRepo) DeletePending(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o, ok := r.orders[id]; ok && o.Status == StatusPending {
		delete(r.orders, id)
	}
	return nil
}

func (r *memRepo) ListByUser(_ context.Context, userID string, after *Position, limit int) ([]*Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []*Order
	for _, o := range r.orders {
		if o.UserID == userID {
			all = append(all, &o)
		}
	}
	slices.SortFunc(all, func(a, b *Order) int {
		return cmp.Or(a.CreateTime.Compare(b.CreateTime), cmp.Compare(a.ID, b.ID))
	})
	var out []*Order
	for _, o := range all {
		if after != nil && (o.CreateTime.Before(after.CreateTime) || o.CreateTime.Equal(after.CreateTime) && o.ID <= after.ID) {
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, o)
	}
	return out, nil
}

func (r *memRepo) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.orders)
}

type ctxKey struct{}

// fakeUsers knows a fixed set of users, or fails with err.
type fakeUsers struct {
	known map[string]bool
	err   error
	// sawValue records the ctxKey value of the last call's context.
	sawValue any
}

func (u *fakeUsers) CheckUser(ctx context.Context, id string) error {
	u.sawValue = ctx.Value(ctxKey{})
	if u.err != nil {
		return u.err
	}
	if !u.known[id] {
		return ErrUserNotFound
	}
	return nil
}

// fakePayments decides by token like the payment simulator, and keeps one
// payment per idempotency key, as the payment service does.
type fakePayments struct {
	mu sync.Mutex
	// down makes every charge fail temporarily while set.
	down     bool
	charges  map[string]PaymentResult
	requests []PaymentCharge
	sawValue any
	deadline bool
}

func (p *fakePayments) Charge(ctx context.Context, c PaymentCharge) (PaymentResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sawValue = ctx.Value(ctxKey{})
	_, p.deadline = ctx.Deadline()
	p.requests = append(p.requests, c)
	if p.down {
		return PaymentResult{}, &RetryableError{Err: ErrPaymentUnavailable, RetryAfter: 2 * time.Second}
	}
	if res, ok := p.charges[c.IdempotencyKey]; ok {
		return res, nil
	}
	var res PaymentResult
	switch c.Token {
	case "tok_approve":
	case "tok_decline":
		res = PaymentResult{Declined: true, DeclineReason: "PAYMENT_DECLINED"}
	case "tok_insufficient":
		res = PaymentResult{Declined: true, DeclineReason: "INSUFFICIENT_FUNDS"}
	default:
		return PaymentResult{}, ErrInvalidPaymentMethod
	}
	if p.charges == nil {
		p.charges = map[string]PaymentResult{}
	}
	res.PaymentID = "pay-" + c.IdempotencyKey
	p.charges[c.IdempotencyKey] = res
	return res, nil
}

func (p *fakePayments) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

func (p *fakePayments) paymentCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.charges)
}
