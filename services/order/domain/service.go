package domain

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Service is the order service's use cases: create an order and run its
// saga, read, list.
type Service struct {
	repo      Repository
	users     Users
	inventory Inventory
	payments  Payments
	policy    SagaPolicy
	log       *slog.Logger

	// Scheduler runs the sagas of created orders; nil runs none (tests
	// drive Step themselves). Set it before use.
	Scheduler Scheduler
	// Notifier hears of every change Step stores; nil tells no one.
	Notifier Notifier
	// StepContext, when set, derives the context of a saga step from the
	// runner's context and the order, for example to carry the request id
	// the order was created with.
	StepContext func(ctx context.Context, o *Order) context.Context
	// Now returns the current time; tests may replace it. Times are kept
	// to the microsecond, the precision the store keeps.
	Now func() time.Time
	// NewID returns a fresh identifier; tests may replace it.
	NewID func() string
	// Jitter returns a random duration in [0, d]; tests may replace it.
	Jitter func(d time.Duration) time.Duration
}

// Deps are the ports a Service works through.
type Deps struct {
	Repo      Repository
	Users     Users
	Inventory Inventory
	Payments  Payments
	// Logger receives saga failures; nil means slog.Default().
	Logger *slog.Logger
}

// NewService returns a Service over deps whose sagas retry as policy says
// (zero fields take the defaults).
func NewService(deps Deps, policy SagaPolicy) *Service {
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{
		repo:      deps.Repo,
		users:     deps.Users,
		inventory: deps.Inventory,
		payments:  deps.Payments,
		policy:    policy.WithDefaults(),
		log:       log,
		Now:       func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		NewID:     newID,
		Jitter:    randomJitter,
	}
}

// Policy returns the saga policy in force, defaults applied.
func (s *Service) Policy() SagaPolicy { return s.policy }

// Create places an order: it checks the request, stores the order PENDING
// at the saga's first step, and hands it to the Scheduler. It does not wait
// for the saga; outcomes such as a declined payment are the order's final
// status, never an error of Create.
//
// Create is idempotent on req.IdempotencyKey, each user's own: a repeat of
// the same request returns the stored order as it is now (and makes sure
// its saga is scheduled); a different request of the user under the same
// key is ErrIdempotencyKeyReused. Another user's key is no concern. The saga's steps are keyed by order, so no
// number of retries, however they race, reserves or charges twice.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*Order, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	fp := req.Fingerprint()
	if s.Scheduler != nil && s.Scheduler.Full() {
		// Shed load before storing anything, but still answer a repeat of
		// an order already placed: its client must learn how it went.
		o, err := s.repo.ByIdempotencyKey(ctx, req.UserID, req.IdempotencyKey)
		switch {
		case err == nil:
			return s.repeat(o, fp)
		case errors.Is(err, ErrNotFound):
			return nil, ErrOverloaded
		default:
			return nil, err
		}
	}
	// No read of the key first: a repeat is rare, and the unique key makes
	// the insert fail for it, as it does for a concurrent twin.
	now := s.Now()
	items := slices.Clone(req.Items)
	for i := range items {
		items[i].UnitPrice = Money{}
	}
	o := &Order{
		ID:             s.NewID(),
		UserID:         req.UserID,
		Items:          items,
		Status:         StatusPending,
		PaymentToken:   req.PaymentToken,
		RequestID:      req.RequestID,
		TraceParent:    req.TraceParent,
		IdempotencyKey: req.IdempotencyKey,
		Fingerprint:    fp,
		ChargeSecret:   newChargeSecret(),
		Version:        1,
		CreateTime:     now,
	}
	o.enter(StepCheckUser, now)
	if err := s.repo.Create(ctx, o); err != nil {
		if !errors.Is(err, ErrDuplicate) {
			return nil, err
		}
		// An earlier or concurrent request with the same key stored its
		// order first: that order is the one this key names.
		winner, err := s.repo.ByIdempotencyKey(ctx, req.UserID, req.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		return s.repeat(winner, fp)
	}
	s.schedule(o)
	return o, nil
}

// repeat answers a repeat of the request that created o.
func (s *Service) repeat(o *Order, fingerprint string) (*Order, error) {
	if o.Fingerprint != fingerprint {
		return nil, ErrIdempotencyKeyReused
	}
	s.schedule(o)
	return o, nil
}

func (s *Service) schedule(o *Order) {
	if s.Scheduler != nil && !o.Status.Terminal() {
		s.Scheduler.Schedule(o)
	}
}

// Order returns the order with the given id, or ErrNotFound.
func (s *Service) Order(ctx context.Context, id string) (*Order, error) {
	return s.repo.ByID(ctx, id)
}

// Pending returns the ids of up to limit unfinished orders whose next
// attempt is due at or before due, the longest due first: what a runner
// resumes.
func (s *Service) Pending(ctx context.Context, due time.Time, limit int) ([]string, error) {
	return s.repo.Pending(ctx, due, limit)
}

// DefaultPageSize and MaxPageSize bound List pages.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// List returns a page of userID's orders after position (from the first
// when nil), oldest first, and the position to continue from, nil on the
// last page. pageSize 0 means DefaultPageSize; larger than MaxPageSize is
// capped.
func (s *Service) List(ctx context.Context, userID string, after *Position, pageSize int) ([]*Order, *Position, error) {
	switch {
	case pageSize < 0:
		return nil, nil, &FieldError{Field: "page_size", Description: "must not be negative"}
	case pageSize == 0:
		pageSize = DefaultPageSize
	case pageSize > MaxPageSize:
		pageSize = MaxPageSize
	}
	// One more than asked tells whether another page follows.
	orders, err := s.repo.ListByUser(ctx, userID, after, pageSize+1)
	if err != nil {
		return nil, nil, err
	}
	if len(orders) <= pageSize {
		return orders, nil, nil
	}
	orders = orders[:pageSize]
	last := orders[len(orders)-1]
	return orders, &Position{CreateTime: last.CreateTime, ID: last.ID}, nil
}

// newID returns a version 7 UUID: time-ordered, so new rows land at the end
// of the primary-key index instead of all over it.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
