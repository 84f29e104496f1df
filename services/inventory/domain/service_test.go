package domain_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/services/inventory/domain"
)

const (
	order1 = "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f201"
	order2 = "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f202"
	order3 = "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f203"
)

var eur = func(units int64) domain.Money { return domain.Money{Currency: "EUR", Units: units} }

func newService(t *testing.T, opts ...domain.Option) (*domain.Service, *memRepo) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	repo := newMemRepo()
	return domain.NewService(repo, append([]domain.Option{domain.WithClock(clock.Now)}, opts...)...), repo
}

// seed creates products with the given stock, named and priced alike.
func seed(t *testing.T, s *domain.Service, stock map[string]int64) {
	t.Helper()
	for sku, n := range stock {
		if _, err := s.CreateProduct(t.Context(), domain.NewProduct{SKU: sku, Name: "Product " + sku, Price: eur(100), Stock: n}); err != nil {
			t.Fatal(err)
		}
	}
}

func stockOf(t *testing.T, s *domain.Service, sku string) (available, reserved int64) {
	t.Helper()
	p, err := s.GetProduct(t.Context(), sku)
	if err != nil {
		t.Fatal(err)
	}
	return p.Available, p.Reserved
}

func TestCreateProduct(t *testing.T) {
	ctx := t.Context()
	s, _ := newService(t)
	p, err := s.CreateProduct(ctx, domain.NewProduct{SKU: "MUG", Name: "  Mug ", Price: eur(1250), Stock: 7})
	if err != nil {
		t.Fatal(err)
	}
	if p.SKU != "MUG" || p.Name != "Mug" || p.Price != eur(1250) || p.Available != 7 || p.Reserved != 0 ||
		p.CreateTime.IsZero() || !p.CreateTime.Equal(p.UpdateTime) {
		t.Errorf("created %+v", p)
	}
	if got, err := s.GetProduct(ctx, "MUG"); err != nil || got != p {
		t.Errorf("GetProduct = %+v, %v; want %+v", got, err, p)
	}
	tests := []struct {
		name    string
		np      domain.NewProduct
		field   string
		wantErr error
	}{
		{name: "taken", np: domain.NewProduct{SKU: "MUG", Name: "Other", Price: eur(1)}, wantErr: domain.ErrSKUTaken},
		{name: "bad sku", np: domain.NewProduct{SKU: "m u g", Name: "Mug", Price: eur(1)}, field: "sku"},
		{name: "no name", np: domain.NewProduct{SKU: "X", Name: " ", Price: eur(1)}, field: "name"},
		{name: "free", np: domain.NewProduct{SKU: "X", Name: "X", Price: eur(0)}, field: "price.units"},
		{name: "no currency", np: domain.NewProduct{SKU: "X", Name: "X", Price: domain.Money{Units: 5}}, field: "price.currency_code"},
		{name: "negative stock", np: domain.NewProduct{SKU: "X", Name: "X", Price: eur(1), Stock: -1}, field: "stock"},
		{name: "too much stock", np: domain.NewProduct{SKU: "X", Name: "X", Price: eur(1), Stock: domain.MaxStock + 1}, field: "stock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateProduct(ctx, tt.np)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if field(err) != tt.field {
				t.Errorf("err = %v, want a validation error on %s", err, tt.field)
			}
		})
	}
	if _, err := s.GetProduct(ctx, "X"); !errors.Is(err, domain.ErrProductNotFound) {
		t.Errorf("a rejected product was stored: %v", err)
	}
	if _, err := s.GetProduct(ctx, "no/such"); field(err) != "sku" {
		t.Errorf("GetProduct(bad sku) = %v, want a validation error on sku", err)
	}
}

func TestListProducts(t *testing.T) {
	ctx := t.Context()
	s, _ := newService(t)
	var want []string
	for i := range 45 {
		sku := fmt.Sprintf("SKU-%02d", i)
		want = append(want, sku)
		seed(t, s, map[string]int64{sku: 1})
	}
	for _, tt := range []struct {
		pageSize  int
		wantPages []int
	}{
		{pageSize: 0, wantPages: []int{20, 20, 5}},
		{pageSize: 15, wantPages: []int{15, 15, 15}},
		{pageSize: 44, wantPages: []int{44, 1}},
		{pageSize: 45, wantPages: []int{45}},
		{pageSize: 100, wantPages: []int{45}},
	} {
		var (
			got   []string
			sizes []int
			after string
		)
		for {
			page, err := s.ListProducts(ctx, tt.pageSize, after)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(page.Products))
			for _, p := range page.Products {
				got = append(got, p.SKU)
			}
			if page.NextAfter == "" {
				break
			}
			after = page.NextAfter
		}
		if !slices.Equal(got, want) || !slices.Equal(sizes, tt.wantPages) {
			t.Errorf("page size %d: pages %v, in order %v; want pages %v", tt.pageSize, sizes, slices.Equal(got, want), tt.wantPages)
		}
	}
	for _, bad := range []int{-1, 101} {
		if _, err := s.ListProducts(ctx, bad, ""); field(err) != "page_size" {
			t.Errorf("ListProducts(page size %d) = %v, want a validation error on page_size", bad, err)
		}
	}
}

func TestBatchGetProducts(t *testing.T) {
	ctx := t.Context()
	s, _ := newService(t)
	seed(t, s, map[string]int64{"A": 1, "B": 2, "C": 3})
	got, err := s.BatchGetProducts(ctx, []string{"C", "A", "B"})
	if err != nil {
		t.Fatal(err)
	}
	var skus []string
	for _, p := range got {
		skus = append(skus, p.SKU)
	}
	if !slices.Equal(skus, []string{"C", "A", "B"}) {
		t.Errorf("BatchGetProducts order = %v, want request order", skus)
	}

	_, err = s.BatchGetProducts(ctx, []string{"A", "X", "B", "Y"})
	var missing *domain.ProductsNotFoundError
	if !errors.As(err, &missing) || !errors.Is(err, domain.ErrProductNotFound) {
		t.Fatalf("unknown skus: %v, want *ProductsNotFoundError", err)
	}
	if want := []domain.MissingProduct{{Index: 1, SKU: "X"}, {Index: 3, SKU: "Y"}}; !slices.Equal(missing.Missing, want) {
		t.Errorf("missing = %+v, want %+v", missing.Missing, want)
	}

	tooMany := make([]string, domain.MaxBatch+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("S", i)
	}
	for _, tt := range []struct {
		skus  []string
		field string
	}{
		{skus: nil, field: "skus"},
		{skus: tooMany, field: "skus"},
		{skus: []string{"A", "bad sku"}, field: "skus[1]"},
		{skus: []string{"A", "B", "A"}, field: "skus[2]"},
	} {
		if _, err := s.BatchGetProducts(ctx, tt.skus); field(err) != tt.field {
			t.Errorf("BatchGetProducts(%d skus) = %v, want a validation error on %s", len(tt.skus), err, tt.field)
		}
	}
}

func TestReserveStock(t *testing.T) {
	ctx := t.Context()
	s, _ := newService(t)
	seed(t, s, map[string]int64{"A": 5, "B": 2})

	lines := []domain.Line{{SKU: "B", Quantity: 2}, {SKU: "A", Quantity: 3}}
	r, err := s.ReserveStock(ctx, order1, lines)
	if err != nil {
		t.Fatal(err)
	}
	if r.OrderID != order1 || r.Status != domain.StatusReserved || !slices.Equal(r.Lines, lines) {
		t.Errorf("reservation = %+v", r)
	}
	if a, res := stockOf(t, s, "A"); a != 2 || res != 3 {
		t.Errorf("A: available %d reserved %d, want 2 and 3", a, res)
	}

	// The same lines in another order are the same reservation.
	again, err := s.ReserveStock(ctx, order1, []domain.Line{{SKU: "A", Quantity: 3}, {SKU: "B", Quantity: 2}})
	if err != nil || !slices.Equal(again.Lines, lines) || again.Status != domain.StatusReserved {
		t.Errorf("repeat = %+v, %v; want the first reservation", again, err)
	}
	if a, _ := stockOf(t, s, "A"); a != 2 {
		t.Errorf("a repeat reserved again: A available %d", a)
	}

	tests := []struct {
		name    string
		orderID string
		lines   []domain.Line
		wantErr error
		field   string
		check   func(t *testing.T, err error)
	}{
		{name: "other lines for the same order", orderID: order1, lines: []domain.Line{{SKU: "A", Quantity: 1}},
			wantErr: domain.ErrReservationMismatch},
		{name: "out of stock", orderID: order2, lines: []domain.Line{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 1}, {SKU: "A2", Quantity: 0}},
			field: "lines[2].quantity"},
		{name: "short on two lines", orderID: order2, lines: []domain.Line{{SKU: "B", Quantity: 1}, {SKU: "A", Quantity: 3}},
			check: func(t *testing.T, err error) {
				var oos *domain.OutOfStockError
				if !errors.As(err, &oos) {
					t.Fatalf("err = %v, want *OutOfStockError", err)
				}
				want := []domain.Shortage{{Index: 0, SKU: "B", Requested: 1, Available: 0}, {Index: 1, SKU: "A", Requested: 3, Available: 2}}
				if !slices.Equal(oos.Shortages, want) {
					t.Errorf("shortages = %+v, want %+v", oos.Shortages, want)
				}
			}},
		{name: "unknown sku", orderID: order2, lines: []domain.Line{{SKU: "A", Quantity: 1}, {SKU: "NOPE", Quantity: 1}},
			check: func(t *testing.T, err error) {
				var missing *domain.ProductsNotFoundError
				if !errors.As(err, &missing) || len(missing.Missing) != 1 || missing.Missing[0] != (domain.MissingProduct{Index: 1, SKU: "NOPE"}) {
					t.Errorf("err = %v, want NOPE at index 1 missing", err)
				}
			}},
		{name: "duplicate sku", orderID: order2, lines: []domain.Line{{SKU: "A", Quantity: 1}, {SKU: "A", Quantity: 1}}, field: "lines"},
		{name: "no lines", orderID: order2, field: "lines"},
		{name: "too many units", orderID: order2, lines: []domain.Line{{SKU: "A", Quantity: domain.MaxQuantity + 1}}, field: "lines[0].quantity"},
		{name: "bad sku", orderID: order2, lines: []domain.Line{{SKU: "A B", Quantity: 1}}, field: "lines[0].sku"},
		{name: "bad order id", orderID: "order-2", lines: []domain.Line{{SKU: "A", Quantity: 1}}, field: "order_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.ReserveStock(ctx, tt.orderID, tt.lines)
			switch {
			case tt.check != nil:
				tt.check(t, err)
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
			default:
				if field(err) != tt.field {
					t.Errorf("err = %v, want a validation error on %s", err, tt.field)
				}
			}
			// Nothing a failed reservation touched moved.
			if a, res := stockOf(t, s, "A"); a != 2 || res != 3 {
				t.Errorf("A: available %d reserved %d after a failed reservation, want 2 and 3", a, res)
			}
		})
	}
}

func TestCommitAndRelease(t *testing.T) {
	ctx := t.Context()
	s, _ := newService(t)
	seed(t, s, map[string]int64{"A": 10})
	line := []domain.Line{{SKU: "A", Quantity: 4}}

	// order1: reserve, commit, commit again; release is refused.
	if _, err := s.ReserveStock(ctx, order1, line); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r, err := s.CommitStock(ctx, order1)
		if err != nil || r.Status != domain.StatusCommitted {
			t.Fatalf("CommitStock = %+v, %v", r, err)
		}
	}
	if a, res := stockOf(t, s, "A"); a != 6 || res != 0 {
		t.Errorf("after commit: available %d reserved %d, want 6 and 0", a, res)
	}
	if _, err := s.ReleaseStock(ctx, order1); !errors.Is(err, domain.ErrReservationCommitted) {
		t.Errorf("release committed = %v, want ErrReservationCommitted", err)
	}
	// A repeat reservation of a committed order returns it.
	if r, err := s.ReserveStock(ctx, order1, line); err != nil || r.Status != domain.StatusCommitted {
		t.Errorf("reserve committed again = %+v, %v", r, err)
	}

	// order2: reserve, release, release again; commit and reserve are refused.
	if _, err := s.ReserveStock(ctx, order2, line); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r, err := s.ReleaseStock(ctx, order2)
		if err != nil || r.Status != domain.StatusReleased || len(r.Lines) != 1 {
			t.Fatalf("ReleaseStock = %+v, %v", r, err)
		}
	}
	if a, res := stockOf(t, s, "A"); a != 6 || res != 0 {
		t.Errorf("after release: available %d reserved %d, want 6 and 0", a, res)
	}
	if _, err := s.CommitStock(ctx, order2); !errors.Is(err, domain.ErrReservationReleased) {
		t.Errorf("commit released = %v, want ErrReservationReleased", err)
	}
	if _, err := s.ReserveStock(ctx, order2, line); !errors.Is(err, domain.ErrReservationReleased) {
		t.Errorf("reserve released = %v, want ErrReservationReleased", err)
	}

	// order3: released before it reserved leaves a tombstone.
	r, err := s.ReleaseStock(ctx, order3)
	if err != nil || r.Status != domain.StatusReleased || len(r.Lines) != 0 || r.OrderID != order3 {
		t.Fatalf("release unknown = %+v, %v; want a released reservation without lines", r, err)
	}
	if _, err := s.ReserveStock(ctx, order3, line); !errors.Is(err, domain.ErrReservationReleased) {
		t.Errorf("late reserve = %v, want ErrReservationReleased", err)
	}
	if a, _ := stockOf(t, s, "A"); a != 6 {
		t.Errorf("a late reservation moved stock: available %d", a)
	}
	if _, err := s.CommitStock(ctx, "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2ff"); !errors.Is(err, domain.ErrReservationNotFound) {
		t.Errorf("commit unknown = %v, want ErrReservationNotFound", err)
	}
	for _, call := range []func() error{
		func() error { _, err := s.CommitStock(ctx, "x"); return err },
		func() error { _, err := s.ReleaseStock(ctx, ""); return err },
	} {
		if err := call(); field(err) != "order_id" {
			t.Errorf("bad order id: %v", err)
		}
	}
}

// TestOrderIDCaseInsensitive: an order id is a UUID, which may come in
// either case; its reservation is one, whatever case each call uses, and
// is stored under the id in lower case.
func TestOrderIDCaseInsensitive(t *testing.T) {
	ctx := t.Context()
	s, _ := newService(t)
	seed(t, s, map[string]int64{"A": 10})
	line := []domain.Line{{SKU: "A", Quantity: 4}}
	upper := strings.ToUpper(order1)

	r, err := s.ReserveStock(ctx, upper, line)
	if err != nil || r.OrderID != order1 {
		t.Fatalf("ReserveStock(%s) = %+v, %v; want the reservation of %s", upper, r, err, order1)
	}
	if _, err := s.ReserveStock(ctx, order1, line); err != nil {
		t.Fatal(err)
	}
	if a, res := stockOf(t, s, "A"); a != 6 || res != 4 {
		t.Fatalf("reserved in both cases: available %d reserved %d, want 6 and 4 (one reservation)", a, res)
	}
	if r, err := s.ReleaseStock(ctx, order1); err != nil || r.Status != domain.StatusReleased || len(r.Lines) != 1 {
		t.Fatalf("ReleaseStock(lower case) = %+v, %v; want the reservation made in upper case, released", r, err)
	}
	if a, res := stockOf(t, s, "A"); a != 10 || res != 0 {
		t.Errorf("after the release: available %d reserved %d, want 10 and 0", a, res)
	}
	if _, err := s.CommitStock(ctx, upper); !errors.Is(err, domain.ErrReservationReleased) {
		t.Errorf("CommitStock(upper case) after the release = %v, want ErrReservationReleased", err)
	}
}

// TestRetriesConflicts: a store that loses a race reports ErrConflict and the
// service runs the operation again, a bounded number of times.
func TestRetriesConflicts(t *testing.T) {
	ctx := t.Context()
	s, repo := newService(t)
	seed(t, s, map[string]int64{"A": 10})
	repo.conflicts = 2
	if _, err := s.ReserveStock(ctx, order1, []domain.Line{{SKU: "A", Quantity: 1}}); err != nil {
		t.Errorf("ReserveStock after two conflicts = %v", err)
	}
	repo.conflicts = 100
	repo.calls = 0
	if _, err := s.ReserveStock(ctx, order2, []domain.Line{{SKU: "A", Quantity: 1}}); !errors.Is(err, domain.ErrConflict) {
		t.Errorf("ReserveStock with endless conflicts = %v, want ErrConflict", err)
	}
	if repo.calls != 3 {
		t.Errorf("tried %d times, want 3", repo.calls)
	}
	repo.conflicts = 0
}

// importAll runs one import of records and returns its summary.
func importAll(t *testing.T, s *domain.Service, records ...domain.StockRecord) domain.ImportSummary {
	t.Helper()
	imp := s.NewImport()
	for _, r := range records {
		if err := imp.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := imp.Apply(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func price(currency string, units int64) *domain.Money {
	return &domain.Money{Currency: currency, Units: units}
}

func TestImport(t *testing.T) {
	s, _ := newService(t)
	seed(t, s, map[string]int64{"MUG": 5})
	// Someone holds 2 mugs: an import moves only available units.
	if _, err := s.ReserveStock(t.Context(), order1, []domain.Line{{SKU: "MUG", Quantity: 2}}); err != nil {
		t.Fatal(err)
	}
	sum := importAll(t, s,
		domain.StockRecord{Line: 2, SKU: "TEE", Name: " T-shirt ", Price: price("EUR", 1999), StockDelta: 10},
		domain.StockRecord{Line: 3, SKU: "TEE", StockDelta: 5},                           // accumulates: 15
		domain.StockRecord{Line: 4, SKU: "TEE", StockDelta: -16},                         // would leave -1
		domain.StockRecord{Line: 5, SKU: "MUG", StockDelta: -3},                          // 3 available -> 0
		domain.StockRecord{Line: 6, SKU: "MUG", Price: price("USD", 100)},                // currency change
		domain.StockRecord{Line: 7, SKU: "MUG", Name: "Big mug", Price: price("EUR", 1)}, // rename, reprice
		domain.StockRecord{Line: 8, SKU: "bad sku!", Name: "X", Price: price("EUR", 1)},
		domain.StockRecord{Line: 9, SKU: "GHOST", StockDelta: 3},
		domain.StockRecord{Line: 10, SKU: "NONAME", Price: price("EUR", 1)},
		domain.StockRecord{Line: 11, SKU: "NOPRICE", Name: "No price"},
		domain.StockRecord{Line: 12, SKU: "FREE", Name: "Free", Price: price("EUR", 0)},
		domain.StockRecord{Line: 13, SKU: "LOWER", Name: "x", Price: price("eur", 5)},
		domain.StockRecord{Line: 14, SKU: "NEG", Name: "Neg", Price: price("EUR", 5), StockDelta: -1},
		domain.StockRecord{Line: 15, SKU: "HUGE", Name: "Huge", Price: price("EUR", 5), StockDelta: domain.MaxStock + 1},
		domain.StockRecord{Line: 16, SKU: "CTRL", Name: "a\x07b", Price: price("EUR", 5)},
		domain.StockRecord{Line: 17, SKU: "TEE", StockDelta: domain.MaxStock},
		domain.StockRecord{Line: 18, SKU: "EMPTY", Name: "Empty", Price: price("EUR", 5)},
	)
	wantReasons := map[int64]string{
		4: domain.RejectStockBelowZero, 6: domain.RejectCurrencyMismatch, 8: domain.RejectInvalidSKU,
		9: domain.RejectUnknownProduct, 10: domain.RejectMissingName, 11: domain.RejectMissingPrice,
		12: domain.RejectInvalidPrice, 13: domain.RejectInvalidPrice, 14: domain.RejectStockBelowZero,
		15: domain.RejectInvalidStock, 16: domain.RejectInvalidName, 17: domain.RejectStockAboveLimit,
	}
	if sum.Received != 17 || sum.Applied != 5 || sum.Rejected != int64(len(wantReasons)) {
		t.Errorf("summary received %d applied %d rejected %d; want 17, 5, %d", sum.Received, sum.Applied, sum.Rejected, len(wantReasons))
	}
	var lines []int64
	for _, r := range sum.Rejections {
		lines = append(lines, r.Line)
		if wantReasons[r.Line] != r.Reason || r.Message == "" {
			t.Errorf("line %d (%s) rejected with %s (%q), want %s", r.Line, r.SKU, r.Reason, r.Message, wantReasons[r.Line])
		}
	}
	if !slices.IsSorted(lines) || len(lines) != len(wantReasons) {
		t.Errorf("rejections by line = %v, want all %d in arrival order", lines, len(wantReasons))
	}

	tee, err := s.GetProduct(t.Context(), "TEE")
	if err != nil || tee.Name != "T-shirt" || tee.Price != eur(1999) || tee.Available != 15 {
		t.Errorf("TEE = %+v, %v", tee, err)
	}
	mug, err := s.GetProduct(t.Context(), "MUG")
	if err != nil || mug.Name != "Big mug" || mug.Price != eur(1) || mug.Available != 0 || mug.Reserved != 2 {
		t.Errorf("MUG = %+v, %v", mug, err)
	}
	if !mug.UpdateTime.After(mug.CreateTime) {
		t.Errorf("MUG update time did not move: %+v", mug)
	}
	if p, err := s.GetProduct(t.Context(), "EMPTY"); err != nil || p.Available != 0 {
		t.Errorf("EMPTY = %+v, %v", p, err)
	}
	for _, sku := range []string{"GHOST", "NONAME", "NOPRICE", "FREE", "LOWER", "NEG", "HUGE", "CTRL"} {
		if _, err := s.GetProduct(t.Context(), sku); !errors.Is(err, domain.ErrProductNotFound) {
			t.Errorf("rejected %s was created: %v", sku, err)
		}
	}
}

// TestImportAboveLimit: released stock can take a product's available
// units over MaxStock, since a release gives back what a reservation took.
// The limit bounds what an import adds; a record that removes stock, or only
// renames, was refused as STOCK_ABOVE_LIMIT on such a product.
func TestImportAboveLimit(t *testing.T) {
	s, _ := newService(t)
	seed(t, s, map[string]int64{"MUG": domain.MaxStock})
	ctx := t.Context()
	if _, err := s.ReserveStock(ctx, order1, []domain.Line{{SKU: "MUG", Quantity: 10}}); err != nil {
		t.Fatal(err)
	}
	if sum := importAll(t, s, domain.StockRecord{Line: 1, SKU: "MUG", StockDelta: 10}); sum.Applied != 1 {
		t.Fatalf("refill to the limit: %+v", sum)
	}
	if _, err := s.ReleaseStock(ctx, order1); err != nil {
		t.Fatal(err)
	}
	sum := importAll(t, s,
		domain.StockRecord{Line: 1, SKU: "MUG", StockDelta: -5},
		domain.StockRecord{Line: 2, SKU: "MUG", Name: "Big mug"},
		domain.StockRecord{Line: 3, SKU: "MUG", StockDelta: 1},
	)
	if sum.Applied != 2 || len(sum.Rejections) != 1 || sum.Rejections[0].Line != 3 || sum.Rejections[0].Reason != domain.RejectStockAboveLimit {
		t.Errorf("summary = %+v, want lines 1 and 2 applied and line 3 STOCK_ABOVE_LIMIT", sum)
	}
	if p, err := s.GetProduct(ctx, "MUG"); err != nil || p.Available != domain.MaxStock+5 || p.Name != "Big mug" {
		t.Errorf("MUG = %+v, %v; want %d available, renamed", p, err, domain.MaxStock+5)
	}
}

// TestImportNoChange: records that change nothing are applied but leave the
// product, its update time included, as it was.
func TestImportNoChange(t *testing.T) {
	s, _ := newService(t)
	seed(t, s, map[string]int64{"MUG": 5})
	before, _ := s.GetProduct(t.Context(), "MUG")
	sum := importAll(t, s, domain.StockRecord{SKU: "MUG"}, domain.StockRecord{SKU: "MUG", Name: before.Name, Price: &before.Price})
	if sum.Applied != 2 || sum.Rejected != 0 {
		t.Errorf("summary = %+v", sum)
	}
	if after, _ := s.GetProduct(t.Context(), "MUG"); after != before {
		t.Errorf("product changed: %+v -> %+v", before, after)
	}
	// An empty import applies nothing and succeeds.
	if sum := importAll(t, s); sum.Received != 0 || sum.Applied != 0 {
		t.Errorf("empty import = %+v", sum)
	}
}

func TestImportLimit(t *testing.T) {
	s, _ := newService(t, domain.WithImportLimit(3))
	imp := s.NewImport()
	for i := range 3 {
		if err := imp.Add(domain.StockRecord{SKU: fmt.Sprint("S", i), Name: "x", Price: price("EUR", 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := imp.Add(domain.StockRecord{SKU: "S4"}); !errors.Is(err, domain.ErrImportTooLarge) {
		t.Errorf("fourth record = %v, want ErrImportTooLarge", err)
	}
	if err := imp.Reject(domain.StockRecord{SKU: "S5"}, "X", "x"); !errors.Is(err, domain.ErrImportTooLarge) {
		t.Errorf("fifth (rejected) record = %v, want ErrImportTooLarge", err)
	}
}

// TestImportRejectionCap: the summary lists the first MaxRejections
// rejections in arrival order, whether found on arrival or when applying,
// and counts them all.
func TestImportRejectionCap(t *testing.T) {
	s, _ := newService(t)
	imp := s.NewImport()
	const n = domain.MaxRejections + 500
	for i := range n {
		rec := domain.StockRecord{Line: int64(i + 1), SKU: fmt.Sprintf("GHOST-%05d", i), StockDelta: 1} // rejected on apply
		if i%2 == 1 {
			rec.SKU = "bad sku" // rejected on arrival
		}
		if err := imp.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := imp.Apply(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Received != n || sum.Rejected != n || sum.Applied != 0 || len(sum.Rejections) != domain.MaxRejections {
		t.Fatalf("summary: received %d rejected %d applied %d listed %d", sum.Received, sum.Rejected, sum.Applied, len(sum.Rejections))
	}
	for i, r := range sum.Rejections {
		want := domain.RejectUnknownProduct
		if i%2 == 1 {
			want = domain.RejectInvalidSKU
		}
		if r.Line != int64(i+1) || r.Reason != want {
			t.Fatalf("rejection %d = %+v, want line %d %s", i, r, i+1, want)
		}
	}
	if _, err := imp.Apply(t.Context()); err == nil {
		t.Error("a second Apply succeeded")
	}
}

// TestImportRetriesConflicts: an import whose transaction lost a race runs
// again from the stored state, counting each record once.
func TestImportRetriesConflicts(t *testing.T) {
	s, repo := newService(t)
	seed(t, s, map[string]int64{"MUG": 1})
	repo.conflicts = 1
	sum := importAll(t, s, domain.StockRecord{SKU: "MUG", StockDelta: 2}, domain.StockRecord{SKU: "MUG", StockDelta: -10})
	if sum.Applied != 1 || sum.Rejected != 1 || len(sum.Rejections) != 1 {
		t.Errorf("summary after a retry = %+v", sum)
	}
	if a, _ := stockOf(t, s, "MUG"); a != 3 {
		t.Errorf("MUG available %d, want 3", a)
	}
}

// TestImportApplyFailure: when the store fails nothing is applied and the
// error is returned.
func TestImportApplyFailure(t *testing.T) {
	s := domain.NewService(failingRepo{memRepo: newMemRepo()})
	imp := s.NewImport()
	if err := imp.Add(domain.StockRecord{SKU: "A", Name: "A", Price: price("EUR", 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := imp.Apply(t.Context()); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Apply = %v, want the store's error", err)
	}
}

type failingRepo struct{ *memRepo }

func (failingRepo) ApplyStock(context.Context, []string, func(string, *domain.Product) (*domain.Product, error), func() domain.StoredImport) error {
	return errors.New("disk on fire")
}
