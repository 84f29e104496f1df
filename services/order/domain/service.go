package domain

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/google/uuid"
)

// settleTimeout bounds recording a payment outcome once the charge is made;
// see Service.pay.
const settleTimeout = 5 * time.Second

// Service is the order service's use cases: create, read, list.
type Service struct {
	repo     Repository
	users    Users
	payments Payments
	// Now returns the current time; tests may replace it. Times are kept
	// to the microsecond, the precision the store keeps.
	Now func() time.Time
	// NewID returns a fresh identifier; tests may replace it.
	NewID func() string
}

// NewService returns a Service storing orders in repo, checking customers
// with users and charging them through payments.
func NewService(repo Repository, users Users, payments Payments) *Service {
	return &Service{
		repo:     repo,
		users:    users,
		payments: payments,
		Now:      func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		NewID:    newID,
	}
}

// Create places an order: it checks the request and the customer, stores
// the order PENDING, charges its total and stores the outcome, PAID or
// PAYMENT_FAILED. A declined payment is an outcome, not an error.
//
// Create is idempotent on req.IdempotencyKey: a repeat of the same request
// returns the stored order, and completes it if an earlier attempt left it
// PENDING; a different request under the same key is ErrIdempotencyKeyReused.
// Charges are keyed by order (PaymentKey), so no number of retries, however
// they race, charges twice.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*Order, error) {
	total, err := req.Total()
	if err != nil {
		return nil, err
	}
	fp := req.Fingerprint()
	prior, err := s.repo.ByIdempotencyKey(ctx, req.IdempotencyKey)
	switch {
	case err == nil:
		return s.resume(ctx, prior, fp, req.PaymentToken)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}

	if err := s.users.CheckUser(ctx, req.UserID); err != nil {
		return nil, err
	}
	now := s.Now()
	o := &Order{
		ID:             s.NewID(),
		UserID:         req.UserID,
		Items:          slices.Clone(req.Items),
		Total:          total,
		Status:         StatusPending,
		IdempotencyKey: req.IdempotencyKey,
		Fingerprint:    fp,
		CreateTime:     now,
		UpdateTime:     now,
	}
	if err := s.repo.Create(ctx, o); err != nil {
		if !errors.Is(err, ErrDuplicate) {
			return nil, err
		}
		// A concurrent request with the same key stored its order first:
		// that order is the one this key names.
		winner, err := s.repo.ByIdempotencyKey(ctx, req.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		return s.resume(ctx, winner, fp, req.PaymentToken)
	}
	return s.pay(ctx, o, req.PaymentToken)
}

// resume answers a repeat of the request that created o.
func (s *Service) resume(ctx context.Context, o *Order, fingerprint, token string) (*Order, error) {
	if o.Fingerprint != fingerprint {
		return nil, ErrIdempotencyKeyReused
	}
	if o.Status != StatusPending {
		return o, nil
	}
	return s.pay(ctx, o, token)
}

// pay charges a PENDING order and records the outcome.
func (s *Service) pay(ctx context.Context, o *Order, token string) (*Order, error) {
	res, err := s.payments.Charge(ctx, PaymentCharge{
		IdempotencyKey: PaymentKey(o.ID),
		Token:          token,
		Reference:      o.ID,
		Amount:         o.Total,
	})
	// From here on money may have moved or a decline was recorded: write
	// the outcome down even if the caller gives up now, so the order does
	// not sit PENDING until a retry that may never come. The context keeps
	// the caller's values (request id, trace) but not its cancellation.
	settleCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	switch {
	case errors.Is(err, ErrInvalidPaymentMethod):
		// Nothing was charged and the same request would fail the same way:
		// the order never was, and a retry starts afresh.
		if err := s.repo.DeletePending(settleCtx, o.ID); err != nil {
			return nil, err
		}
		return nil, &FieldError{Field: "payment_token", Description: "unknown payment method token"}
	case err != nil:
		// The order stays PENDING; a retry with the same key resumes it.
		return nil, err
	}
	return s.repo.Update(settleCtx, o.ID, func(o *Order) error {
		if o.Status != StatusPending {
			// A concurrent attempt with the same key settled it already,
			// with this very payment: the charge key is the order's.
			return nil
		}
		if res.Declined {
			return o.MarkPaymentFailed(res.PaymentID, res.DeclineReason, s.Now())
		}
		return o.MarkPaid(res.PaymentID, s.Now())
	})
}

// Order returns the order with the given id, or ErrNotFound.
func (s *Service) Order(ctx context.Context, id string) (*Order, error) {
	return s.repo.ByID(ctx, id)
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
