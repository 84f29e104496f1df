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
	orders map[string]*Order
	saves  int
	// raceWinner, when set, is stored by the next Create just before its
	// own insert, to simulate losing a race on the idempotency key.
	raceWinner *Order
	// beforeSave, when set, runs (unlocked) before each Save, to simulate
	// another runner moving the order on.
	beforeSave func()
}

func newMemRepo() *memRepo { return &memRepo{orders: map[string]*Order{}} }

func (r *memRepo) Create(_ context.Context, o *Order) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.raceWinner; w != nil {
		r.raceWinner = nil
		r.orders[w.ID] = w.Clone()
	}
	for _, q := range r.orders {
		if q.UserID == o.UserID && q.IdempotencyKey == o.IdempotencyKey {
			return ErrDuplicate
		}
	}
	r.orders[o.ID] = o.Clone()
	return nil
}

func (r *memRepo) ByID(_ context.Context, id string) (*Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.orders[id]
	if !ok {
		return nil, ErrNotFound
	}
	return o.Clone(), nil
}

func (r *memRepo) ByIdempotencyKey(_ context.Context, userID, key string) (*Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.orders {
		if o.UserID == userID && o.IdempotencyKey == key {
			return o.Clone(), nil
		}
	}
	return nil, ErrNotFound
}

func (r *memRepo) Save(_ context.Context, o *Order, from int64, _ bool) error {
	if r.beforeSave != nil {
		r.beforeSave()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	stored, ok := r.orders[o.ID]
	if !ok || stored.Version != from {
		return ErrConflict
	}
	r.orders[o.ID] = o.Clone()
	r.saves++
	return nil
}

func (r *memRepo) Pending(_ context.Context, due time.Time, limit int) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, o := range r.orders {
		if o.Status == StatusPending && !o.NextAttempt.After(due) {
			ids = append(ids, o.ID)
		}
	}
	slices.Sort(ids)
	return ids[:min(limit, len(ids))], nil
}

func (r *memRepo) ListByUser(_ context.Context, userID string, after *Position, limit int) ([]*Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []*Order
	for _, o := range r.orders {
		if o.UserID == userID {
			all = append(all, o.Clone())
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

// fakePeers answers for the user, inventory and payment services: each
// call returns the error (or result) set for its method, and records the
// context it was given.
type fakePeers struct {
	mu    sync.Mutex
	calls []string
	// errs holds the error each method returns; a missing entry is success.
	errs map[string]error
	// prices are inventory's prices by sku.
	prices map[string]Money
	// charge is the Charge result when it succeeds.
	charge PaymentResult
	// cancelled is CancelCharge's payment id.
	cancelled string
	// block, when set, makes calls wait for their context to end.
	block bool
	// saw records the ctxKey value and deadline of the last call.
	sawValue    any
	sawDeadline bool
	charges     []PaymentCharge
}

func newFakePeers() *fakePeers {
	return &fakePeers{errs: map[string]error{}, prices: map[string]Money{"A": {"USD", 300}, "B": {"USD", 400}}, charge: PaymentResult{PaymentID: "pay-1"}}
}

func (p *fakePeers) call(ctx context.Context, method string) error {
	p.mu.Lock()
	p.calls = append(p.calls, method)
	p.sawValue = ctx.Value(ctxKey{})
	_, p.sawDeadline = ctx.Deadline()
	err, block := p.errs[method], p.block
	p.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (p *fakePeers) set(method string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs[method] = err
}

func (p *fakePeers) CheckUser(ctx context.Context, _ string) error { return p.call(ctx, "CheckUser") }

func (p *fakePeers) Prices(ctx context.Context, _ []string) (map[string]Money, error) {
	if err := p.call(ctx, "Prices"); err != nil {
		return nil, err
	}
	return p.prices, nil
}

func (p *fakePeers) Reserve(ctx context.Context, _ string, _ []StockLine) error {
	return p.call(ctx, "Reserve")
}

func (p *fakePeers) Commit(ctx context.Context, _ string) error { return p.call(ctx, "Commit") }

func (p *fakePeers) Release(ctx context.Context, _ string) error { return p.call(ctx, "Release") }

func (p *fakePeers) Charge(ctx context.Context, c PaymentCharge) (PaymentResult, error) {
	p.mu.Lock()
	p.charges = append(p.charges, c)
	p.mu.Unlock()
	if err := p.call(ctx, "Charge"); err != nil {
		return PaymentResult{}, err
	}
	return p.charge, nil
}

func (p *fakePeers) CancelCharge(ctx context.Context, _ string) (string, error) {
	if err := p.call(ctx, "CancelCharge"); err != nil {
		return "", err
	}
	return p.cancelled, nil
}

// scheduled records what a Service submitted; it is full while full is.
type scheduled struct {
	mu   sync.Mutex
	ids  []string
	full bool
}

func (s *scheduled) Schedule(o *Order) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, o.ID)
}

func (s *scheduled) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.full
}

// published records what a Service published.
type published struct {
	mu     sync.Mutex
	orders []*Order
}

func (p *published) Publish(o *Order) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.orders = append(p.orders, o)
}
