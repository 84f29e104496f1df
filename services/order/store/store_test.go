package store_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/store"
)

// eachDialect opens a fresh store per dialect and runs fn against it.
func eachDialect(t *testing.T, opts store.Options, fn func(t *testing.T, s *store.Store)) {
	t.Helper()
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, err := store.Open(t.Context(), url, opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		fn(t, s)
	})
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

// order is a new order as domain.Service.Create makes it: unpriced, at
// CHECK_USER.
func order(id, user, key string, created time.Time) *domain.Order {
	return &domain.Order{
		ID: id, UserID: user, IdempotencyKey: key, Fingerprint: "fp-" + key, PaymentToken: "tok_approve", RequestID: "req-" + id,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Items: []domain.LineItem{
			{SKU: "B-2", Quantity: 2, Expected: &domain.Money{Currency: "JPY", Units: 300}},
			{SKU: "A-1", Quantity: 1},
			{SKU: "C_3", Quantity: 4, Expected: &domain.Money{Currency: "JPY", Units: 0}},
		},
		Status: domain.StatusPending, Step: domain.StepCheckUser, Version: 1,
		NextAttempt: created, StepDeadline: created.Add(30 * time.Second),
		CreateTime: created, UpdateTime: created,
	}
}

// priced is o moved on to CHARGE, priced in JPY.
func priced(o *domain.Order) *domain.Order {
	p := o.Clone()
	units := []int64{300, 7, 10}
	for i := range p.Items {
		p.Items[i].UnitPrice = domain.Money{Currency: "JPY", Units: units[i]}
	}
	p.Total = domain.Money{Currency: "JPY", Units: 2*300 + 7 + 4*10}
	p.Step, p.Attempts, p.LastError, p.Version = domain.StepCharge, 2, "payment down", o.Version+1
	p.NextAttempt, p.UpdateTime = t0.Add(time.Minute), t0.Add(time.Second)
	return p
}

func TestCreateAndRead(t *testing.T) {
	eachDialect(t, store.Options{}, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		want := order("o1", "u1", "k1", t0)
		if err := s.Create(ctx, want); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			read func() (*domain.Order, error)
			err  error
		}{
			{"by id", func() (*domain.Order, error) { return s.ByID(ctx, "o1") }, nil},
			{"by key", func() (*domain.Order, error) { return s.ByIdempotencyKey(ctx, "u1", "k1") }, nil},
			{"missing id", func() (*domain.Order, error) { return s.ByID(ctx, "nope") }, domain.ErrNotFound},
			{"missing key", func() (*domain.Order, error) { return s.ByIdempotencyKey(ctx, "u1", "nope") }, domain.ErrNotFound},
			{"another user's key", func() (*domain.Order, error) { return s.ByIdempotencyKey(ctx, "u2", "k1") }, domain.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := tt.read()
				if !errors.Is(err, tt.err) {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
				if tt.err == nil && !reflect.DeepEqual(got, want) {
					t.Fatalf("got  %+v\nwant %+v", got, want)
				}
			})
		}
	})
}

func TestCreateDuplicateKeyIsAtomic(t *testing.T) {
	eachDialect(t, store.Options{}, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		if err := s.Create(ctx, order("o1", "u1", "k1", t0)); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, order("o2", "u1", "k1", t0)); !errors.Is(err, domain.ErrDuplicate) {
			t.Fatalf("Create with a taken key = %v, want ErrDuplicate", err)
		}
		if _, err := s.ByID(ctx, "o2"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("loser of the key race is readable: %v", err)
		}
		// Keys are each user's: another user's order with the same key
		// is an order of its own.
		if err := s.Create(ctx, order("o4", "u2", "k1", t0)); err != nil {
			t.Fatalf("Create with another user's key = %v, want a new order", err)
		}
		if got, err := s.ByIdempotencyKey(ctx, "u2", "k1"); err != nil || got.ID != "o4" {
			t.Fatalf("u2's k1 = %+v, %v; want o4", got, err)
		}
		// A half-written order (items rejected) leaves nothing behind.
		bad := order("o3", "u1", "k3", t0)
		bad.Items = append(bad.Items, domain.LineItem{SKU: "X", Quantity: -1})
		if err := s.Create(ctx, bad); err == nil {
			t.Fatal("order with a negative quantity stored")
		}
		if _, err := s.ByID(ctx, "o3"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("order whose items failed is readable: %v", err)
		}
	})
}

func TestSave(t *testing.T) {
	eachDialect(t, store.Options{}, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		o := order("o1", "u1", "k1", t0)
		if err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		p := priced(o)
		tests := []struct {
			name    string
			save    *domain.Order
			from    int64
			prices  bool
			wantErr error
			want    *domain.Order
		}{
			{"stale version", p, 7, true, domain.ErrConflict, o},
			{"missing order", &domain.Order{ID: "nope", Status: domain.StatusPending, Step: domain.StepPrice}, 1, false, domain.ErrConflict, o},
			{"priced and moved on", p, 1, true, nil, p},
			{"same version twice", p, 1, true, domain.ErrConflict, p},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.Save(ctx, tt.save, tt.from, tt.prices); !errors.Is(err, tt.wantErr) {
					t.Fatalf("Save = %v, want %v", err, tt.wantErr)
				}
				got, err := s.ByID(ctx, "o1")
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("stored %+v, %v\nwant   %+v", got, err, tt.want)
				}
			})
		}

		// Without pricesChanged the items are left alone.
		done := p.Clone()
		done.Items[0].UnitPrice.Units = 1
		done.Status, done.Step, done.PaymentID, done.Version = domain.StatusConfirmed, domain.StepDone, "pay-1", p.Version+1
		done.NextAttempt, done.StepDeadline, done.Attempts = time.Time{}, time.Time{}, 0
		if err := s.Save(ctx, done, p.Version, false); err != nil {
			t.Fatal(err)
		}
		got, _ := s.ByID(ctx, "o1")
		if got.Items[0].UnitPrice.Units != 300 || got.Status != domain.StatusConfirmed || got.PaymentID != "pay-1" ||
			!got.NextAttempt.IsZero() || !got.StepDeadline.IsZero() {
			t.Fatalf("stored %+v", got)
		}
	})
}

func TestSaveRaces(t *testing.T) {
	eachDialect(t, store.Options{}, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		o := order("o1", "u1", "k1", t0)
		if err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		// Runners racing to store a change computed from the same version:
		// one wins, the others learn they lost.
		const n = 8
		var wins, conflicts atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				next := o.Clone()
				next.Step, next.Version, next.LastError = domain.StepPrice, 2, fmt.Sprint("runner ", i)
				switch err := s.Save(ctx, next, 1, false); {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, domain.ErrConflict):
					conflicts.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != n-1 {
			t.Fatalf("%d wins, %d conflicts; want 1 and %d", wins.Load(), conflicts.Load(), n-1)
		}
	})
}

func TestSaveAppendsEventOfTerminalOrders(t *testing.T) {
	var appended atomic.Int32
	opts := store.Options{Event: func(o *domain.Order) events.Event {
		return events.Event{Subject: "order.confirmed", AggregateID: o.ID, Message: &orderv1.OrderConfirmed{Order: &orderv1.Order{Id: o.ID}}}
	}}
	eachDialect(t, opts, func(t *testing.T, s *store.Store) {
		appended.Store(0)
		s.OnAppend(func() { appended.Add(1) })
		ctx := t.Context()
		o := order("o1", "u1", "k1", t0)
		if err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		p := priced(o)
		if err := s.Save(ctx, p, 1, true); err != nil {
			t.Fatal(err)
		}
		if n := outbox(t, s.DB(), "o1"); n != 0 || appended.Load() != 0 {
			t.Fatalf("%d events for a pending order (%d notified), want none", n, appended.Load())
		}
		done := p.Clone()
		done.Status, done.Step, done.Version = domain.StatusConfirmed, domain.StepDone, p.Version+1
		// A terminal change that loses its race appends nothing either.
		if err := s.Save(ctx, done, 1, false); !errors.Is(err, domain.ErrConflict) {
			t.Fatalf("stale Save = %v", err)
		}
		if n := outbox(t, s.DB(), "o1"); n != 0 {
			t.Fatalf("%d events after a refused change, want none", n)
		}
		if err := s.Save(ctx, done, p.Version, false); err != nil {
			t.Fatal(err)
		}
		if n := outbox(t, s.DB(), "o1"); n != 1 || appended.Load() != 1 {
			t.Fatalf("%d events (%d notified) after the order ended, want 1 (1)", n, appended.Load())
		}
	})
}

// outbox counts the outbox rows about an order.
func outbox(t *testing.T, db *sqldb.DB, id string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), db.Rebind(`SELECT COUNT(*) FROM events_outbox WHERE aggregate_id = ?`), id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPending(t *testing.T) {
	eachDialect(t, store.Options{}, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		for i, next := range []time.Duration{3, 1, 2} {
			o := order(fmt.Sprint("o", i), "u", fmt.Sprint("k", i), t0)
			o.NextAttempt = t0.Add(next * time.Second)
			if err := s.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		ended := order("ended", "u", "k-ended", t0)
		ended.Status, ended.Step, ended.NextAttempt = domain.StatusRejected, domain.StepDone, time.Time{}
		if err := s.Create(ctx, ended); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			due   time.Time
			limit int
			want  []string
		}{
			{t0, 10, nil},
			{t0.Add(time.Second), 10, []string{"o1"}},
			{t0.Add(2 * time.Second), 10, []string{"o1", "o2"}},
			{t0.Add(time.Hour), 10, []string{"o1", "o2", "o0"}},
			{t0.Add(time.Hour), 2, []string{"o1", "o2"}},
		}
		for _, tt := range tests {
			got, err := s.Pending(ctx, tt.due, tt.limit)
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("Pending(%v, %d) = %v, %v; want %v", tt.due, tt.limit, got, err, tt.want)
			}
		}
	})
}

func TestListByUser(t *testing.T) {
	eachDialect(t, store.Options{}, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		// Ten orders of u1 in five timestamps (ids break ties), shuffled
		// insertion, and orders of another user in between.
		var want []string
		for i := range 10 {
			want = append(want, fmt.Sprintf("o%02d", i))
		}
		for _, i := range []int{7, 2, 9, 0, 5, 3, 8, 1, 6, 4} {
			if err := s.Create(ctx, order(want[i], "u1", "k"+want[i], t0.Add(time.Duration(i/2)*time.Microsecond))); err != nil {
				t.Fatal(err)
			}
			if err := s.Create(ctx, order("x"+want[i], "u2", "kx"+want[i], t0)); err != nil {
				t.Fatal(err)
			}
		}
		for _, limit := range []int{1, 3, 4, 10, 11} {
			t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
				var (
					got   []string
					after *domain.Position
				)
				for range 20 {
					page, err := s.ListByUser(ctx, "u1", after, limit)
					if err != nil {
						t.Fatal(err)
					}
					for _, o := range page {
						if o.UserID != "u1" || len(o.Items) != 3 || o.Items[0].SKU != "B-2" || o.Items[2].SKU != "C_3" {
							t.Fatalf("listed %+v", o)
						}
						got = append(got, o.ID)
					}
					if len(page) < limit {
						break
					}
					last := page[len(page)-1]
					after = &domain.Position{CreateTime: last.CreateTime, ID: last.ID}
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("listed %v, want %v", got, want)
				}
			})
		}
		page, err := s.ListByUser(ctx, "nobody", nil, 10)
		if err != nil || len(page) != 0 {
			t.Fatalf("ListByUser(nobody) = %v, %v", page, err)
		}
	})
}

// TestMigrateFromIssue2 upgrades a database written by the service before
// the saga: settled orders keep their outcome, pending ones are cancelled
// through compensation (their charge's outcome is unknown).
func TestMigrateFromIssue2(t *testing.T) {
	v1, err := os.ReadFile("migrations/00001_orders.sql")
	if err != nil {
		t.Fatal(err)
	}
	sqldbtest.Run(t, func(t *testing.T, url string) {
		ctx := t.Context()
		old, err := sqldb.Open(ctx, url, fstest.MapFS{"00001_orders.sql": {Data: v1}}, sqldb.WithMigrationTable(store.MigrationTable))
		if err != nil {
			t.Fatal(err)
		}
		us := t0.UnixMicro()
		for _, row := range []struct{ id, status, payment, reason string }{
			{"paid", "PAID", "p1", ""}, {"failed", "PAYMENT_FAILED", "p2", "PAYMENT_DECLINED"}, {"pending", "PENDING", "", ""},
		} {
			if _, err := old.ExecContext(ctx, old.Rebind(`INSERT INTO orders (id, user_id, idempotency_key, fingerprint, currency,
				total_units, status, payment_id, failure_reason, create_time, update_time) VALUES (?, 'u', ?, 'fp', 'USD', 500, ?, ?, ?, ?, ?)`),
				row.id, "k-"+row.id, row.status, row.payment, row.reason, us, us); err != nil {
				t.Fatal(err)
			}
			if _, err := old.ExecContext(ctx, old.Rebind(`INSERT INTO order_items (order_id, line, sku, quantity, unit_units)
				VALUES (?, 0, 'A', 2, 250)`), row.id); err != nil {
				t.Fatal(err)
			}
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}

		s, err := store.Open(ctx, url, store.Options{})
		if err != nil {
			t.Fatalf("migrate: %v", err)
		}
		defer s.Close()
		tests := []struct {
			id              string
			status          domain.Status
			step, failed    domain.Step
			reason, payment string
		}{
			{"paid", domain.StatusConfirmed, domain.StepDone, "", "", "p1"},
			{"failed", domain.StatusCancelled, domain.StepDone, "", "PAYMENT_DECLINED", "p2"},
			{"pending", domain.StatusPending, domain.StepRefund, domain.StepCharge, domain.FailureLegacyPending, ""},
		}
		for _, tt := range tests {
			o, err := s.ByID(ctx, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if o.Status != tt.status || o.Step != tt.step || o.FailedStep != tt.failed || o.FailureReason != tt.reason || o.PaymentID != tt.payment ||
				o.Total != (domain.Money{Currency: "USD", Units: 500}) || o.Version != 1 || !o.CreateTime.Equal(t0) ||
				len(o.Items) != 1 || o.Items[0].UnitPrice != (domain.Money{Currency: "USD", Units: 250}) || o.Items[0].Expected != nil {
				t.Fatalf("migrated %s: %+v", tt.id, o)
			}
		}
		if ids, err := s.Pending(ctx, t0.Add(time.Hour), 10); err != nil || fmt.Sprint(ids) != "[pending]" {
			t.Fatalf("Pending = %v, %v; want the legacy pending order", ids, err)
		}
		// The rebuilt tables keep their constraints.
		if err := s.Create(ctx, order("again", "u", "k-paid", t0)); !errors.Is(err, domain.ErrDuplicate) {
			t.Fatalf("Create with a migrated key = %v, want ErrDuplicate", err)
		}
	})
}

// TestConstraintsRefuseUnknownStatusAndStep checks that the database itself
// refuses an order state the saga never writes, whatever goes wrong above
// it: the CHECKs written as equality chains (00003) allow exactly what the
// IN lists before them did.
func TestConstraintsRefuseUnknownStatusAndStep(t *testing.T) {
	eachDialect(t, store.Options{}, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		if err := s.Create(ctx, order("o1", "u", "k1", t0)); err != nil {
			t.Fatal(err)
		}
		db := s.DB()
		tests := []struct {
			status string
			step   string
			ok     bool
		}{
			{"PENDING", "CHECK_USER", true},
			{"PENDING", "PRICE", true},
			{"PENDING", "RESERVE", true},
			{"PENDING", "CHARGE", true},
			{"PENDING", "COMMIT", true},
			{"PENDING", "REFUND", true},
			{"PENDING", "RELEASE", true},
			{"CONFIRMED", "DONE", true},
			{"CANCELLED", "DONE", true},
			{"REJECTED", "DONE", true},
			{"PAID", "DONE", false},
			{"pending", "CHECK_USER", false},
			{"PENDING", "SHIP", false},
			{"PENDING", "", false},
			{"PENDING", "DONE", false},
			{"CONFIRMED", "COMMIT", false},
		}
		for _, tt := range tests {
			_, err := db.ExecContext(ctx, db.Rebind(`UPDATE orders SET status = ?, step = ? WHERE id = 'o1'`), tt.status, tt.step)
			if (err == nil) != tt.ok {
				t.Errorf("status %q, step %q: err = %v, want allowed %v", tt.status, tt.step, err, tt.ok)
			}
		}
	})
}
