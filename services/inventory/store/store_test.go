package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/inventory/domain"
	"github.com/duetkit/duet/services/inventory/store"
)

func openStore(t *testing.T, url string) (*store.Store, *sqldb.DB) {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return store.New(db), db
}

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func product(sku string, available int64) domain.Product {
	return domain.Product{SKU: sku, Name: "Product " + sku, Price: domain.Money{Currency: "EUR", Units: 250},
		Available: available, CreateTime: base, UpdateTime: base}
}

func create(t *testing.T, s *store.Store, products ...domain.Product) {
	t.Helper()
	for _, p := range products {
		if err := s.CreateProduct(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
}

// stock returns the available and reserved units of sku.
func stock(t *testing.T, s *store.Store, sku string) (int64, int64) {
	t.Helper()
	p, err := s.Product(t.Context(), sku)
	if err != nil {
		t.Fatal(err)
	}
	return p.Available, p.Reserved
}

func reservation(orderID string, lines ...domain.Line) domain.Reservation {
	return domain.Reservation{OrderID: orderID, Lines: lines, Status: domain.StatusReserved,
		CreateTime: base.Add(time.Second), UpdateTime: base.Add(time.Second)}
}

func TestProducts(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		p := product("MUG", 3)
		p.CreateTime = base.Add(1234567 * time.Microsecond)
		p.UpdateTime = p.CreateTime
		create(t, s, p)
		got, err := s.Product(ctx, "MUG")
		if err != nil || got != p {
			t.Errorf("Product = %+v, %v; want %+v", got, err, p)
		}
		if err := s.CreateProduct(ctx, product("MUG", 1)); !errors.Is(err, domain.ErrSKUTaken) {
			t.Errorf("CreateProduct(taken) = %v, want ErrSKUTaken", err)
		}
		if _, err := s.Product(ctx, "mug"); !errors.Is(err, domain.ErrProductNotFound) {
			t.Errorf("Product(other case) = %v, want ErrProductNotFound: skus are exact", err)
		}
		create(t, s, product("CUP", 1))
		found, err := s.Products(ctx, []string{"CUP", "NOPE", "MUG"})
		if err != nil || len(found) != 2 || found["CUP"].SKU != "CUP" || found["MUG"] != p {
			t.Errorf("Products = %v, %v", found, err)
		}
	})
}

func TestListProductsKeyset(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		skus := []string{"b", "A", "a-1", "a_1", "Z9", "0", "9", "ab", "a", "B-2", "zz"}
		for _, sku := range skus {
			create(t, s, product(sku, 1))
		}
		want := slices.Clone(skus)
		slices.Sort(want) // byte order
		for _, limit := range []int{1, 2, 3, 5, 11, 12} {
			var got []string
			after := ""
			for range 20 {
				page, err := s.ListProducts(ctx, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range page {
					got = append(got, p.SKU)
				}
				if len(page) < limit {
					break
				}
				after = page[len(page)-1].SKU
			}
			if !slices.Equal(got, want) {
				t.Errorf("limit %d: listed %v, want %v", limit, got, want)
			}
		}
	})
}

func TestReserve(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		create(t, s, product("A", 5), product("B", 2))

		tests := []struct {
			name  string
			lines []domain.Line
			check func(t *testing.T, err error)
		}{
			{name: "one line short", lines: []domain.Line{{SKU: "A", Quantity: 5}, {SKU: "B", Quantity: 3}},
				check: func(t *testing.T, err error) {
					var oos *domain.OutOfStockError
					if !errors.As(err, &oos) || !slices.Equal(oos.Shortages, []domain.Shortage{{Index: 1, SKU: "B", Requested: 3, Available: 2}}) {
						t.Errorf("err = %v, want B short", err)
					}
				}},
			{name: "every line short, reported in request order", lines: []domain.Line{{SKU: "B", Quantity: 9}, {SKU: "A", Quantity: 6}},
				check: func(t *testing.T, err error) {
					var oos *domain.OutOfStockError
					want := []domain.Shortage{{Index: 0, SKU: "B", Requested: 9, Available: 2}, {Index: 1, SKU: "A", Requested: 6, Available: 5}}
					if !errors.As(err, &oos) || !slices.Equal(oos.Shortages, want) {
						t.Errorf("err = %v, want %+v", err, want)
					}
				}},
			{name: "unknown sku wins over short", lines: []domain.Line{{SKU: "B", Quantity: 9}, {SKU: "NOPE", Quantity: 1}, {SKU: "A", Quantity: 1}},
				check: func(t *testing.T, err error) {
					var missing *domain.ProductsNotFoundError
					if !errors.As(err, &missing) || !slices.Equal(missing.Missing, []domain.MissingProduct{{Index: 1, SKU: "NOPE"}}) {
						t.Errorf("err = %v, want NOPE missing", err)
					}
				}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				id := uuid.NewString()
				_, _, err := s.Reserve(ctx, reservation(id, tt.lines...))
				tt.check(t, err)
				// All or nothing: no stock moved, no reservation recorded.
				if a, r := stock(t, s, "A"); a != 5 || r != 0 {
					t.Errorf("A: available %d reserved %d, want 5 and 0", a, r)
				}
				if a, r := stock(t, s, "B"); a != 2 || r != 0 {
					t.Errorf("B: available %d reserved %d, want 2 and 0", a, r)
				}
				if _, err := s.Reservation(ctx, id); !errors.Is(err, domain.ErrReservationNotFound) {
					t.Errorf("a failed reservation was recorded: %v", err)
				}
			})
		}

		id := uuid.NewString()
		r := reservation(id, domain.Line{SKU: "B", Quantity: 2}, domain.Line{SKU: "A", Quantity: 5})
		got, existed, err := s.Reserve(ctx, r)
		if err != nil || existed {
			t.Fatalf("Reserve = %v, existed %v", err, existed)
		}
		if a, res := stock(t, s, "A"); a != 0 || res != 5 {
			t.Errorf("A: available %d reserved %d, want 0 and 5", a, res)
		}
		stored, err := s.Reservation(ctx, id)
		if err != nil || !slices.Equal(stored.Lines, r.Lines) || stored.Status != domain.StatusReserved ||
			!stored.CreateTime.Equal(r.CreateTime) || !slices.Equal(got.Lines, r.Lines) {
			t.Errorf("stored reservation = %+v, %v; want %+v", stored, err, r)
		}
		// A second Reserve of the order returns the first, whatever it asks.
		again, existed, err := s.Reserve(ctx, reservation(id, domain.Line{SKU: "A", Quantity: 1}))
		if err != nil || !existed || !slices.Equal(again.Lines, r.Lines) {
			t.Errorf("Reserve again = %+v, existed %v, %v", again, existed, err)
		}
		if a, _ := stock(t, s, "B"); a != 0 {
			t.Errorf("B available %d after a repeat, want 0", a)
		}
		p, _ := s.Product(ctx, "A")
		if !p.UpdateTime.Equal(base.Add(time.Second)) {
			t.Errorf("A update time = %v, want the reservation's", p.UpdateTime)
		}
	})
}

func TestUpdateReservation(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		create(t, s, product("A", 10), product("B", 10))
		later := base.Add(time.Minute)
		commit := func(r *domain.Reservation) (domain.StockMove, error) { return r.Commit(later) }
		release := func(r *domain.Reservation) (domain.StockMove, error) { return r.Release(later) }

		committed, released := uuid.NewString(), uuid.NewString()
		for _, id := range []string{committed, released} {
			if _, _, err := s.Reserve(ctx, reservation(id, domain.Line{SKU: "A", Quantity: 3}, domain.Line{SKU: "B", Quantity: 1})); err != nil {
				t.Fatal(err)
			}
		}
		// A: 4 available, 6 reserved; B: 8 and 2.
		steps := []struct {
			name         string
			orderID      string
			create       bool
			fn           func(*domain.Reservation) (domain.StockMove, error)
			wantStatus   domain.ReservationStatus
			wantErr      error
			wantA, wantB [2]int64 // available, reserved afterwards
		}{
			{name: "commit", orderID: committed, fn: commit, wantStatus: domain.StatusCommitted, wantA: [2]int64{4, 3}, wantB: [2]int64{8, 1}},
			{name: "commit again", orderID: committed, fn: commit, wantStatus: domain.StatusCommitted, wantA: [2]int64{4, 3}, wantB: [2]int64{8, 1}},
			{name: "release committed", orderID: committed, create: true, fn: release, wantErr: domain.ErrReservationCommitted, wantA: [2]int64{4, 3}, wantB: [2]int64{8, 1}},
			{name: "release", orderID: released, create: true, fn: release, wantStatus: domain.StatusReleased, wantA: [2]int64{7, 0}, wantB: [2]int64{9, 0}},
			{name: "release again", orderID: released, create: true, fn: release, wantStatus: domain.StatusReleased, wantA: [2]int64{7, 0}, wantB: [2]int64{9, 0}},
			{name: "commit released", orderID: released, fn: commit, wantErr: domain.ErrReservationReleased, wantA: [2]int64{7, 0}, wantB: [2]int64{9, 0}},
			{name: "commit unknown", orderID: uuid.NewString(), fn: commit, wantErr: domain.ErrReservationNotFound, wantA: [2]int64{7, 0}, wantB: [2]int64{9, 0}},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				var tomb *domain.Reservation
				if st.create {
					tomb = &domain.Reservation{OrderID: st.orderID, Status: domain.StatusReleased, CreateTime: later, UpdateTime: later}
				}
				got, err := s.UpdateReservation(ctx, st.orderID, tomb, st.fn)
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("err = %v, want %v", err, st.wantErr)
				}
				if err == nil && (got.Status != st.wantStatus || len(got.Lines) != 2) {
					t.Errorf("reservation = %+v, want status %s with its lines", got, st.wantStatus)
				}
				if a, r := stock(t, s, "A"); [2]int64{a, r} != st.wantA {
					t.Errorf("A = %d, %d; want %v", a, r, st.wantA)
				}
				if a, r := stock(t, s, "B"); [2]int64{a, r} != st.wantB {
					t.Errorf("B = %d, %d; want %v", a, r, st.wantB)
				}
				if err == nil {
					stored, err := s.Reservation(ctx, st.orderID)
					if err != nil || stored.Status != st.wantStatus {
						t.Errorf("stored = %+v, %v", stored, err)
					}
				}
			})
		}

		// Releasing an order that never reserved records a tombstone without
		// calling fn; a later Reserve for the order finds it.
		ghost := uuid.NewString()
		tomb := domain.Reservation{OrderID: ghost, Status: domain.StatusReleased, CreateTime: later, UpdateTime: later}
		got, err := s.UpdateReservation(ctx, ghost, &tomb, func(*domain.Reservation) (domain.StockMove, error) {
			t.Error("fn called for a new tombstone")
			return domain.MoveNone, nil
		})
		if err != nil || got.Status != domain.StatusReleased || len(got.Lines) != 0 {
			t.Fatalf("tombstone = %+v, %v", got, err)
		}
		existing, existed, err := s.Reserve(ctx, reservation(ghost, domain.Line{SKU: "A", Quantity: 1}))
		if err != nil || !existed || existing.Status != domain.StatusReleased || len(existing.Lines) != 0 {
			t.Errorf("Reserve after the tombstone = %+v, existed %v, %v", existing, existed, err)
		}
		if a, _ := stock(t, s, "A"); a != 7 {
			t.Errorf("A available %d, want 7: a late reservation moved stock", a)
		}

		// fn failing writes nothing.
		id := uuid.NewString()
		if _, _, err := s.Reserve(ctx, reservation(id, domain.Line{SKU: "A", Quantity: 1})); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		if _, err := s.UpdateReservation(ctx, id, nil, func(r *domain.Reservation) (domain.StockMove, error) {
			r.Status = domain.StatusCommitted
			return domain.MoveCommit, boom
		}); !errors.Is(err, boom) {
			t.Errorf("err = %v, want boom", err)
		}
		if r, _ := s.Reservation(ctx, id); r.Status != domain.StatusReserved {
			t.Errorf("status = %s after a failed fn, want RESERVED", r.Status)
		}
	})
}

// TestCheckConstraints: the schema itself refuses negative stock and
// unknown reservation states, whatever code above it does.
func TestCheckConstraints(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, db := openStore(t, url)
		create(t, s, product("A", 1))
		if _, _, err := s.Reserve(t.Context(), reservation("o1", domain.Line{SKU: "A", Quantity: 1})); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			stmt string
			ok   bool
		}{
			{"UPDATE products SET available = -1 WHERE sku = 'A'", false},
			{"UPDATE products SET reserved = -1 WHERE sku = 'A'", false},
			{"UPDATE products SET available = available - 2 WHERE sku = 'A'", false},
			{"UPDATE products SET price_units = 0 WHERE sku = 'A'", false},
			{"UPDATE reservations SET status = 'PENDING' WHERE order_id = 'o1'", false},
			{"UPDATE reservations SET status = 'reserved' WHERE order_id = 'o1'", false},
			{"UPDATE reservations SET status = 'RELEASED' WHERE order_id = 'o1'", true},
			{"UPDATE reservations SET status = 'COMMITTED' WHERE order_id = 'o1'", true},
			{"UPDATE reservations SET status = 'RESERVED' WHERE order_id = 'o1'", true},
		} {
			_, err := db.ExecContext(t.Context(), tt.stmt)
			if (err == nil) != tt.ok {
				t.Errorf("%s: err = %v, want allowed %v", tt.stmt, err, tt.ok)
			}
		}
		if a, r := stock(t, s, "A"); a != 0 || r != 1 {
			t.Errorf("A = %d, %d; want 0, 1", a, r)
		}
	})
}

// TestConcurrentReservationsForTheLastUnits: N orders race for the last M
// units. Exactly M win, the rest are out of stock, and stock ends at zero,
// never below. Each order asks for two products in alternating order, so
// transactions that locked rows in request order would deadlock.
func TestConcurrentReservationsForTheLastUnits(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		const n, m = 24, 7
		create(t, s, product("LAST", m), product("PLENTY", 1000))
		svc := domain.NewService(s)
		var (
			wg       sync.WaitGroup
			won, oos atomic.Int64
			start    = make(chan struct{})
		)
		for i := range n {
			lines := []domain.Line{{SKU: "LAST", Quantity: 1}, {SKU: "PLENTY", Quantity: 1}}
			if i%2 == 1 {
				slices.Reverse(lines)
			}
			wg.Go(func() {
				<-start
				_, err := svc.ReserveStock(t.Context(), uuid.NewString(), lines)
				var short *domain.OutOfStockError
				switch {
				case err == nil:
					won.Add(1)
				case errors.As(err, &short):
					oos.Add(1)
				default:
					t.Errorf("ReserveStock: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if won.Load() != m || oos.Load() != n-m {
			t.Errorf("%d reservations succeeded and %d were out of stock; want %d and %d", won.Load(), oos.Load(), m, n-m)
		}
		if a, r := stock(t, s, "LAST"); a != 0 || r != m {
			t.Errorf("LAST: available %d reserved %d, want 0 and %d", a, r, m)
		}
		if a, r := stock(t, s, "PLENTY"); a != 1000-m || r != m {
			t.Errorf("PLENTY: available %d reserved %d, want %d and %d: a failed reservation kept its other line", a, r, 1000-m, m)
		}
	})
}

// TestConcurrentReservationsOfOneOrder: retries of one order racing each
// other hold its stock once.
func TestConcurrentReservationsOfOneOrder(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		create(t, s, product("A", 100))
		svc := domain.NewService(s)
		id := uuid.NewString()
		const n = 12
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				r, err := svc.ReserveStock(t.Context(), id, []domain.Line{{SKU: "A", Quantity: 5}})
				if err != nil || r.Status != domain.StatusReserved {
					t.Errorf("ReserveStock = %+v, %v", r, err)
				}
			})
		}
		wg.Wait()
		if a, r := stock(t, s, "A"); a != 95 || r != 5 {
			t.Errorf("A: available %d reserved %d, want 95 and 5", a, r)
		}
	})
}

// TestConcurrentStockConservation runs reservations, commits, releases and
// imports at once on a few products and checks that no unit is created or
// lost: what is available plus reserved plus sold equals what there was
// plus what imports added.
func TestConcurrentStockConservation(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		skus := []string{"P1", "P2", "P3"}
		const initial = 20
		for _, sku := range skus {
			create(t, s, product(sku, initial))
		}
		svc := domain.NewService(s)
		var (
			wg            sync.WaitGroup
			mu            sync.Mutex
			sold          = map[string]int64{}
			imported      = map[string]int64{}
			workers, each = 6, 15
		)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					ctx := t.Context()
					if (w+i)%5 == 0 {
						// An import taking one unit of each product away and
						// adding two to another.
						imp := svc.NewImport()
						_ = imp.Add(domain.StockRecord{SKU: skus[i%3], StockDelta: -1})
						_ = imp.Add(domain.StockRecord{SKU: skus[(i+1)%3], StockDelta: 2})
						sum, err := imp.Apply(ctx)
						if err != nil {
							t.Errorf("import: %v", err)
							continue
						}
						mu.Lock()
						imported[skus[(i+1)%3]] += 2
						if sum.Applied == 2 {
							imported[skus[i%3]]--
						}
						mu.Unlock()
						continue
					}
					id := uuid.NewString()
					lines := []domain.Line{{SKU: skus[(w+i)%3], Quantity: 2}, {SKU: skus[(w+i+1)%3], Quantity: 1}}
					if _, err := svc.ReserveStock(ctx, id, lines); err != nil {
						var short *domain.OutOfStockError
						if !errors.As(err, &short) {
							t.Errorf("reserve: %v", err)
						}
						continue
					}
					if i%2 == 0 {
						if _, err := svc.ReleaseStock(ctx, id); err != nil {
							t.Errorf("release: %v", err)
						}
						continue
					}
					if _, err := svc.CommitStock(ctx, id); err != nil {
						t.Errorf("commit: %v", err)
						continue
					}
					mu.Lock()
					for _, l := range lines {
						sold[l.SKU] += l.Quantity
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, sku := range skus {
			a, r := stock(t, s, sku)
			if a < 0 || r != 0 || a+sold[sku] != initial+imported[sku] {
				t.Errorf("%s: available %d reserved %d sold %d imported %d; want available+sold = %d and nothing reserved",
					sku, a, r, sold[sku], imported[sku], initial+imported[sku])
			}
		}
	})
}

func TestApplyStock(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		create(t, s, product("OLD", 5))
		later := base.Add(time.Hour)

		// fn failing half-way leaves everything as it was.
		boom := errors.New("boom")
		err := s.ApplyStock(ctx, []string{"NEW", "OLD"}, func(sku string, cur *domain.Product) (*domain.Product, error) {
			if sku == "OLD" {
				return nil, boom
			}
			p := product(sku, 1)
			return &p, nil
		}, nil)
		if !errors.Is(err, boom) {
			t.Fatalf("ApplyStock = %v, want boom", err)
		}
		if _, err := s.Product(ctx, "NEW"); !errors.Is(err, domain.ErrProductNotFound) {
			t.Errorf("NEW was created by a failed ApplyStock: %v", err)
		}

		// Many skus, over several lookup chunks: each fn sees what is
		// stored, and what it returns is stored.
		var skus []string
		for i := range 1200 {
			skus = append(skus, fmt.Sprintf("N%04d", i))
		}
		skus = append(skus, "OLD")
		seen := 0
		err = s.ApplyStock(ctx, skus, func(sku string, cur *domain.Product) (*domain.Product, error) {
			seen++
			if sku == "OLD" {
				if cur == nil || cur.Available != 5 {
					return nil, fmt.Errorf("OLD = %+v", cur)
				}
				next := *cur
				next.Available, next.Name, next.UpdateTime = 9, "Renamed", later
				return &next, nil
			}
			if cur != nil {
				return nil, fmt.Errorf("%s exists", sku)
			}
			p := product(sku, 3)
			return &p, nil
		}, nil)
		if err != nil || seen != len(skus) {
			t.Fatalf("ApplyStock = %v after %d of %d skus", err, seen, len(skus))
		}
		old, _ := s.Product(ctx, "OLD")
		if old.Available != 9 || old.Name != "Renamed" || !old.UpdateTime.Equal(later) || !old.CreateTime.Equal(base) {
			t.Errorf("OLD = %+v", old)
		}
		if p, err := s.Product(ctx, "N1199"); err != nil || p.Available != 3 {
			t.Errorf("N1199 = %+v, %v", p, err)
		}
	})
}

// TestMigrateKeepsReservations upgrades a database written before 00002
// rebuilt the reservation tables: reservations and their lines survive.
func TestMigrateKeepsReservations(t *testing.T) {
	v1, err := os.ReadFile("migrations/00001_inventory.sql")
	if err != nil {
		t.Fatal(err)
	}
	sqldbtest.Run(t, func(t *testing.T, url string) {
		ctx := t.Context()
		old, err := sqldb.Open(ctx, url, fstest.MapFS{"00001_inventory.sql": {Data: v1}}, sqldb.WithMigrationTable(store.MigrationTable))
		if err != nil {
			t.Fatal(err)
		}
		us := base.UnixMicro()
		for _, stmt := range []string{
			`INSERT INTO products (sku, name, currency, price_units, available, reserved, create_time, update_time)
				VALUES ('A', 'a', 'EUR', 250, 5, 3, ?, ?)`,
			`INSERT INTO reservations (order_id, status, create_time, update_time) VALUES ('o1', 'RESERVED', ?, ?)`,
			`INSERT INTO reservation_lines (order_id, position, sku, quantity) VALUES ('o1', 0, 'A', 3)`,
			`INSERT INTO reservations (order_id, status, create_time, update_time) VALUES ('o2', 'RELEASED', ?, ?)`,
		} {
			args := []any{us, us}
			if strings.Count(stmt, "?") == 0 {
				args = nil
			}
			if _, err := old.ExecContext(ctx, old.Rebind(stmt), args...); err != nil {
				t.Fatal(err)
			}
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}

		s, db := openStore(t, url)
		r, err := s.Reservation(ctx, "o1")
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != domain.StatusReserved || len(r.Lines) != 1 || r.Lines[0] != (domain.Line{SKU: "A", Quantity: 3}) || !r.CreateTime.Equal(base) {
			t.Fatalf("migrated o1 = %+v", r)
		}
		if r, err := s.Reservation(ctx, "o2"); err != nil || r.Status != domain.StatusReleased || len(r.Lines) != 0 {
			t.Fatalf("migrated o2 = %+v, %v", r, err)
		}
		// The rebuilt lines still refer to the reservations and products.
		for _, stmt := range []string{
			`INSERT INTO reservation_lines (order_id, position, sku, quantity) VALUES ('nobody', 0, 'A', 1)`,
			`INSERT INTO reservation_lines (order_id, position, sku, quantity) VALUES ('o2', 0, 'missing', 1)`,
		} {
			if _, err := db.ExecContext(ctx, stmt); err == nil {
				t.Errorf("%s succeeded after the migration, want a foreign key violation", stmt)
			}
		}
	})
}

// icuDatabase creates a PostgreSQL database collated by ICU's en-US rules
// (where "a" sorts before "B", unlike bytes) beside the one
// DUET_TEST_POSTGRES_URL names, drops it when the test ends, and returns
// its URL. It skips the test without PostgreSQL or ICU.
func icuDatabase(t *testing.T) string {
	t.Helper()
	base := os.Getenv(sqldbtest.PostgresEnv)
	if base == "" {
		t.Skipf("%s is not set", sqldbtest.PostgresEnv)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := "duet_icu_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	if _, err := admin.ExecContext(t.Context(), "CREATE DATABASE "+name+
		" LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0"); err != nil {
		// Only a server without ICU (or too old for the syntax) is a
		// reason to skip; any other failure is the test's.
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "0A000" || pgErr.Code == "42601" || pgErr.Code == "22023") {
			t.Skipf("no ICU collation: %v", err)
		}
		t.Fatalf("create an ICU database: %v", err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// TestLockOrderUnderICUCollation: on a database whose collation does not
// sort skus by bytes, a stock import locks its products in the same order
// as a reservation does (bytes: "B" before "a"), so the two wait for each
// other in line instead of deadlocking. The test holds "B" the way a
// reservation of B and a does first, lets the import of a and B queue
// behind it, then takes "a" as that reservation would next.
func TestLockOrderUnderICUCollation(t *testing.T) {
	dbURL := icuDatabase(t)
	s, db := openStore(t, dbURL)
	create(t, s, product("a", 10), product("B", 10))
	ctx := t.Context()

	reservation, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reservation.Rollback()
	lock := func(sku string) error {
		_, err := reservation.ExecContext(ctx, "SELECT sku FROM products WHERE sku = $1 FOR UPDATE", sku)
		return err
	}
	if err := lock("B"); err != nil {
		t.Fatal(err)
	}

	imported := make(chan error, 1)
	go func() {
		imported <- s.ApplyStock(ctx, []string{"a", "B"}, func(sku string, p *domain.Product) (*domain.Product, error) {
			next := *p
			next.Available++
			return &next, nil
		}, nil)
	}()
	// The import waits for a lock (on B, holding nothing, as it should;
	// on B holding a, as it did with the collation's order).
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the import never waited for the held row")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := lock("a"); err != nil {
		t.Fatalf("the reservation's second lock: %v (the import held it: a deadlock)", err)
	}
	if err := reservation.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-imported; err != nil {
		t.Fatalf("import: %v, want it to go through once the reservation committed", err)
	}
	for _, sku := range []string{"a", "B"} {
		if available, _ := stock(t, s, sku); available != 11 {
			t.Errorf("%s: %d available, want 11", sku, available)
		}
	}
}

// TestStoredImports: an import stored under its id with ApplyStock reads
// back whole; a second one under the same id is ErrImportIDTaken and
// rolls its products' changes back.
func TestStoredImports(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, db := openStore(t, url)
		ctx := t.Context()
		create(t, s, product("OLD", 5))
		bump := func(_ string, cur *domain.Product) (*domain.Product, error) {
			next := *cur
			next.Available++
			return &next, nil
		}
		want := domain.StoredImport{ID: "imp-1", Fingerprint: "fp", CreateTime: base, Summary: domain.ImportSummary{
			ImportID: "imp-1", Received: 3, Applied: 1, Rejected: 2,
			Rejections: []domain.Rejection{
				{Line: 2, SKU: "bad sku", Reason: domain.RejectInvalidSKU, Message: "invalid sku: \"quoted\", ünïcode"},
				{Line: 3, SKU: "GHOST", Reason: domain.RejectUnknownProduct, Message: "no such product"},
			},
		}}
		if err := s.ApplyStock(ctx, []string{"OLD"}, bump, func() domain.StoredImport { return want }); err != nil {
			t.Fatal(err)
		}
		got, err := s.ImportByID(ctx, "imp-1")
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("ImportByID = %+v, %v\nwant %+v", got, err, want)
		}
		err = s.ApplyStock(ctx, []string{"OLD"}, bump, func() domain.StoredImport { return domain.StoredImport{ID: "imp-1", CreateTime: base} })
		if !errors.Is(err, domain.ErrImportIDTaken) {
			t.Fatalf("a second import under the id = %v, want ErrImportIDTaken", err)
		}
		if p, _ := s.Product(ctx, "OLD"); p.Available != 6 {
			t.Fatalf("OLD available %d, want 6: the second import rolled back", p.Available)
		}
		if _, err := s.ImportByID(ctx, "imp-2"); !errors.Is(err, domain.ErrImportNotFound) {
			t.Fatalf("ImportByID of an unknown id = %v, want ErrImportNotFound", err)
		}
		// Without a record nothing is stored.
		if err := s.ApplyStock(ctx, []string{"OLD"}, bump, nil); err != nil {
			t.Fatal(err)
		}
		if p, _ := s.Product(ctx, "OLD"); p.Available != 7 {
			t.Fatalf("OLD available %d, want 7", p.Available)
		}
		var stored int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM stock_imports").Scan(&stored); err != nil || stored != 1 {
			t.Fatalf("%d imports stored (%v), want the one", stored, err)
		}
	})
}

// TestPurgeImports: one PurgeImports deletes at most its limit of
// imports, the oldest, of those applied before the cutoff; their ids are
// then unknown, the newer ones still answered.
func TestPurgeImports(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, db := openStore(t, url)
		ctx := t.Context()
		create(t, s, product("OLD", 5))
		keep := func(string, *domain.Product) (*domain.Product, error) { return nil, nil }
		const limit, total = 10, 13
		// Stored newest first, so that the oldest are not simply the
		// first rows written.
		for i := total - 1; i >= 0; i-- {
			imp := domain.StoredImport{ID: fmt.Sprint("imp-", i), Fingerprint: "fp", CreateTime: base.Add(time.Duration(i) * time.Second),
				Summary: domain.ImportSummary{ImportID: fmt.Sprint("imp-", i)}}
			if err := s.ApplyStock(ctx, []string{"OLD"}, keep, func() domain.StoredImport { return imp }); err != nil {
				t.Fatal(err)
			}
		}
		known := func(i int) bool {
			_, err := s.ImportByID(ctx, fmt.Sprint("imp-", i))
			if err != nil && !errors.Is(err, domain.ErrImportNotFound) {
				t.Fatal(err)
			}
			return err == nil
		}
		cutoff := base.Add(time.Duration(total-1) * time.Second) // all but the newest are older
		for call, want := range []int64{limit, 2, 0} {
			n, err := s.PurgeImports(ctx, cutoff, limit)
			if err != nil || n != want {
				t.Fatalf("PurgeImports = %d, %v; want %d", n, err, want)
			}
			if call == 0 && (known(limit-1) || !known(limit) || !known(limit+1)) {
				t.Fatalf("the first chunk did not take the %d oldest", limit)
			}
		}
		if known(0) || !known(total-1) {
			t.Errorf("after the purge: the oldest import known %v, the newest %v; want false, true", known(0), known(total-1))
		}
		var stored int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM stock_imports").Scan(&stored); err != nil || stored != 1 {
			t.Fatalf("%d imports left (%v), want the newest", stored, err)
		}
	})
}
