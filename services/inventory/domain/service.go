package domain

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Page sizes for ListProducts.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
	// MaxBatch is the most skus BatchGetProducts takes.
	MaxBatch = 100
)

// conflictRetries bounds how often an operation whose transaction lost a
// race (ErrConflict) is run again before the error is returned.
const conflictRetries = 3

// ProductPage is one page of products in sku order.
type ProductPage struct {
	// Products are the page's products, in sku order.
	Products []Product
	// NextAfter is the sku the following page starts after; empty on the
	// last page.
	NextAfter string
}

// Service runs the inventory use cases over a Repository.
type Service struct {
	repo        Repository
	now         func() time.Time
	importLimit int64
}

// Option configures a Service.
type Option func(*Service)

// WithClock makes the Service read the time from now; tests use it.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithImportLimit sets how many records one stock import may send
// (default DefaultImportLimit); tests use a small one.
func WithImportLimit(n int) Option { return func(s *Service) { s.importLimit = int64(n) } }

// NewService returns a Service keeping products and reservations in repo.
func NewService(repo Repository, opts ...Option) *Service {
	s := &Service{repo: repo, now: time.Now, importLimit: DefaultImportLimit}
	for _, o := range opts {
		o(s)
	}
	return s
}

// CreateProduct adds a product. A sku that exists is ErrSKUTaken.
func (s *Service) CreateProduct(ctx context.Context, np NewProduct) (Product, error) {
	p, err := newProduct(np, s.now())
	if err != nil {
		return Product{}, err
	}
	if err := s.repo.CreateProduct(ctx, p); err != nil {
		return Product{}, err
	}
	return p, nil
}

// GetProduct returns the product with sku, or ErrProductNotFound.
func (s *Service) GetProduct(ctx context.Context, sku string) (Product, error) {
	if err := CheckSKU("sku", sku); err != nil {
		return Product{}, err
	}
	return s.repo.Product(ctx, sku)
}

// ListProducts returns the page of at most pageSize products (0 means
// DefaultPageSize) whose skus follow after, or the first page when after
// is empty.
func (s *Service) ListProducts(ctx context.Context, pageSize int, after string) (ProductPage, error) {
	switch {
	case pageSize == 0:
		pageSize = DefaultPageSize
	case pageSize < 0 || pageSize > MaxPageSize:
		return ProductPage{}, invalid("page_size", "must be between 0 and %d", MaxPageSize)
	}
	// One extra row tells whether another page follows without a count.
	products, err := s.repo.ListProducts(ctx, after, pageSize+1)
	if err != nil {
		return ProductPage{}, err
	}
	page := ProductPage{Products: products}
	if len(products) > pageSize {
		page.Products = products[:pageSize]
		page.NextAfter = page.Products[pageSize-1].SKU
	}
	return page, nil
}

// BatchGetProducts returns the products with skus, in the same order. Any
// unknown sku makes it fail with a *ProductsNotFoundError naming them all.
func (s *Service) BatchGetProducts(ctx context.Context, skus []string) ([]Product, error) {
	if len(skus) == 0 {
		return nil, invalid("skus", "must name at least one sku")
	}
	if len(skus) > MaxBatch {
		return nil, invalid("skus", "must name at most %d skus", MaxBatch)
	}
	seen := make(map[string]bool, len(skus))
	for i, sku := range skus {
		if err := CheckSKU(fmt.Sprintf("skus[%d]", i), sku); err != nil {
			return nil, err
		}
		if seen[sku] {
			return nil, invalid(fmt.Sprintf("skus[%d]", i), "sku %q is named twice", sku)
		}
		seen[sku] = true
	}
	found, err := s.repo.Products(ctx, skus)
	if err != nil {
		return nil, err
	}
	products := make([]Product, 0, len(skus))
	var missing []MissingProduct
	for i, sku := range skus {
		p, ok := found[sku]
		if !ok {
			missing = append(missing, MissingProduct{Index: i, SKU: sku})
			continue
		}
		products = append(products, p)
	}
	if len(missing) > 0 {
		return nil, &ProductsNotFoundError{Missing: missing}
	}
	return products, nil
}

// ReserveStock holds lines for the order, all of them or none.
//
// Stock that cannot cover the lines is an *OutOfStockError and unknown skus
// a *ProductsNotFoundError; nothing is held then. A repeat for an order that
// holds a reservation with the same lines (in any order) returns it as it
// stands, even committed; with other lines it is ErrReservationMismatch. An
// order whose reservation was released, or that was released before it
// reserved, is ErrReservationReleased.
func (s *Service) ReserveStock(ctx context.Context, orderID string, lines []Line) (Reservation, error) {
	orderID, err := normalizeOrderID(orderID)
	if err != nil {
		return Reservation{}, err
	}
	if err := checkLines(lines); err != nil {
		return Reservation{}, err
	}
	var (
		got     Reservation
		existed bool
	)
	err = retryConflicts(ctx, func() error {
		now := Timestamp(s.now())
		r := Reservation{OrderID: orderID, Lines: lines, Status: StatusReserved, CreateTime: now, UpdateTime: now}
		var err error
		got, existed, err = s.repo.Reserve(ctx, r)
		return err
	})
	if err != nil {
		return Reservation{}, err
	}
	if !existed {
		return got, nil
	}
	switch {
	case got.Status == StatusReleased:
		return Reservation{}, ErrReservationReleased
	case !sameLines(got.Lines, lines):
		return Reservation{}, ErrReservationMismatch
	}
	return got, nil
}

// CommitStock makes the order's reservation final: its units leave stock
// for good. Repeats are no-ops. An order without a reservation is
// ErrReservationNotFound, a released one ErrReservationReleased.
func (s *Service) CommitStock(ctx context.Context, orderID string) (Reservation, error) {
	orderID, err := normalizeOrderID(orderID)
	if err != nil {
		return Reservation{}, err
	}
	var r Reservation
	err = retryConflicts(ctx, func() error {
		var err error
		r, err = s.repo.UpdateReservation(ctx, orderID, nil, func(r *Reservation) (StockMove, error) {
			return r.Commit(s.now())
		})
		return err
	})
	return r, err
}

// ReleaseStock returns the order's reserved units to stock. Repeats are
// no-ops. An order without a reservation gets a released one without lines
// (a tombstone), so a reservation arriving later is refused. A committed
// reservation is ErrReservationCommitted.
func (s *Service) ReleaseStock(ctx context.Context, orderID string) (Reservation, error) {
	orderID, err := normalizeOrderID(orderID)
	if err != nil {
		return Reservation{}, err
	}
	var r Reservation
	err = retryConflicts(ctx, func() error {
		t := tombstone(orderID, s.now())
		var err error
		r, err = s.repo.UpdateReservation(ctx, orderID, &t, func(r *Reservation) (StockMove, error) {
			return r.Release(s.now())
		})
		return err
	})
	return r, err
}

// NewImport starts a stock import; see Import.
func (s *Service) NewImport() *Import {
	return &Import{repo: s.repo, now: s.now, limit: s.importLimit}
}

// retryConflicts runs op, and runs it again while it fails with ErrConflict,
// up to conflictRetries times in all.
func retryConflicts(ctx context.Context, op func() error) error {
	var err error
	for range conflictRetries {
		if err = op(); !errors.Is(err, ErrConflict) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}
