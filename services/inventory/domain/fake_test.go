package domain_test

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/duetkit/duet/services/inventory/domain"
)

// memRepo is an in-memory domain.Repository, enough to test the Service's
// logic; the real store has its own tests against SQL. One mutex makes
// every method a transaction.
type memRepo struct {
	mu           sync.Mutex
	products     map[string]domain.Product
	reservations map[string]domain.Reservation
	// conflicts makes the next ApplyStock and Reserve calls fail with
	// ErrConflict that many times, as a store losing a race would.
	conflicts int
	calls     int
	// imports holds the imports stored under an id; missImportOnce makes
	// the next ImportByID miss.
	imports        map[string]domain.StoredImport
	missImportOnce bool
}

func newMemRepo() *memRepo {
	return &memRepo{products: map[string]domain.Product{}, reservations: map[string]domain.Reservation{}}
}

func (r *memRepo) CreateProduct(_ context.Context, p domain.Product) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.products[p.SKU]; ok {
		return domain.ErrSKUTaken
	}
	r.products[p.SKU] = p
	return nil
}

func (r *memRepo) Product(_ context.Context, sku string) (domain.Product, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.products[sku]
	if !ok {
		return domain.Product{}, domain.ErrProductNotFound
	}
	return p, nil
}

func (r *memRepo) Products(_ context.Context, skus []string) (map[string]domain.Product, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]domain.Product{}
	for _, sku := range skus {
		if p, ok := r.products[sku]; ok {
			out[sku] = p
		}
	}
	return out, nil
}

func (r *memRepo) ListProducts(_ context.Context, after string, limit int) ([]domain.Product, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []domain.Product
	for _, p := range r.products {
		if p.SKU > after {
			all = append(all, p)
		}
	}
	slices.SortFunc(all, func(a, b domain.Product) int { return cmp.Compare(a.SKU, b.SKU) })
	return all[:min(limit, len(all))], nil
}

func (r *memRepo) conflict() bool {
	r.calls++
	if r.conflicts > 0 {
		r.conflicts--
		return true
	}
	return false
}

func (r *memRepo) Reserve(_ context.Context, res domain.Reservation) (domain.Reservation, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conflict() {
		return domain.Reservation{}, false, domain.ErrConflict
	}
	if old, ok := r.reservations[res.OrderID]; ok {
		return old, true, nil
	}
	var (
		missing []domain.MissingProduct
		short   []domain.Shortage
	)
	for i, l := range res.Lines {
		p, ok := r.products[l.SKU]
		switch {
		case !ok:
			missing = append(missing, domain.MissingProduct{Index: i, SKU: l.SKU})
		case p.Available < l.Quantity:
			short = append(short, domain.Shortage{Index: i, SKU: l.SKU, Requested: l.Quantity, Available: p.Available})
		}
	}
	if len(missing) > 0 {
		return domain.Reservation{}, false, &domain.ProductsNotFoundError{Missing: missing}
	}
	if len(short) > 0 {
		return domain.Reservation{}, false, &domain.OutOfStockError{Shortages: short}
	}
	for _, l := range res.Lines {
		p := r.products[l.SKU]
		p.Available -= l.Quantity
		p.Reserved += l.Quantity
		r.products[l.SKU] = p
	}
	res.Lines = slices.Clone(res.Lines)
	r.reservations[res.OrderID] = res
	return res, false, nil
}

func (r *memRepo) UpdateReservation(_ context.Context, orderID string, create *domain.Reservation,
	fn func(*domain.Reservation) (domain.StockMove, error)) (domain.Reservation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.reservations[orderID]
	if !ok {
		if create == nil {
			return domain.Reservation{}, domain.ErrReservationNotFound
		}
		r.reservations[orderID] = *create
		return *create, nil
	}
	move, err := fn(&res)
	if err != nil {
		return domain.Reservation{}, err
	}
	for _, l := range res.Lines {
		p := r.products[l.SKU]
		switch move {
		case domain.MoveCommit:
			p.Reserved -= l.Quantity
		case domain.MoveRelease:
			p.Reserved -= l.Quantity
			p.Available += l.Quantity
		}
		r.products[l.SKU] = p
	}
	r.reservations[orderID] = res
	return res, nil
}

func (r *memRepo) Reservation(_ context.Context, orderID string) (domain.Reservation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.reservations[orderID]
	if !ok {
		return domain.Reservation{}, domain.ErrReservationNotFound
	}
	return res, nil
}

func (r *memRepo) ApplyStock(_ context.Context, skus []string, fn func(string, *domain.Product) (*domain.Product, error), record func() domain.StoredImport) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.IsSorted(skus) {
		panic("ApplyStock: skus not sorted")
	}
	if r.conflict() {
		return domain.ErrConflict
	}
	// Work on a copy so a failing fn leaves nothing behind.
	next := maps.Clone(r.products)
	for _, sku := range skus {
		var cur *domain.Product
		if p, ok := next[sku]; ok {
			cur = &p
		}
		p, err := fn(sku, cur)
		if err != nil {
			return err
		}
		if p != nil {
			next[sku] = *p
		}
	}
	if record != nil {
		imp := record()
		if _, ok := r.imports[imp.ID]; ok {
			return domain.ErrImportIDTaken
		}
		if r.imports == nil {
			r.imports = map[string]domain.StoredImport{}
		}
		r.imports[imp.ID] = imp
	}
	r.products = next
	return nil
}

func (r *memRepo) ImportByID(_ context.Context, id string) (domain.StoredImport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	imp, ok := r.imports[id]
	if !ok || r.missImportOnce {
		r.missImportOnce = false
		return domain.StoredImport{}, domain.ErrImportNotFound
	}
	return imp, nil
}

// fakeClock ticks one millisecond per reading.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}
