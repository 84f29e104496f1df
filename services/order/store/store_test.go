package store_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/store"
)

// eachDialect opens a fresh store per dialect and runs fn against it.
func eachDialect(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	t.Helper()
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, err := store.Open(t.Context(), url, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		fn(t, s)
	})
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

func order(id, user, key string, created time.Time) *domain.Order {
	return &domain.Order{
		ID: id, UserID: user, IdempotencyKey: key, Fingerprint: "fp-" + key,
		Items: []domain.LineItem{
			{SKU: "B-2", Quantity: 2, UnitPrice: domain.Money{Currency: "JPY", Units: 300}},
			{SKU: "A-1", Quantity: 1, UnitPrice: domain.Money{Currency: "JPY", Units: 0}},
			{SKU: "C_3", Quantity: 4, UnitPrice: domain.Money{Currency: "JPY", Units: 10}},
		},
		Total:  domain.Money{Currency: "JPY", Units: 640},
		Status: domain.StatusPending, CreateTime: created, UpdateTime: created,
	}
}

func TestCreateAndRead(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
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
			{"by key", func() (*domain.Order, error) { return s.ByIdempotencyKey(ctx, "k1") }, nil},
			{"missing id", func() (*domain.Order, error) { return s.ByID(ctx, "nope") }, domain.ErrNotFound},
			{"missing key", func() (*domain.Order, error) { return s.ByIdempotencyKey(ctx, "nope") }, domain.ErrNotFound},
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
	eachDialect(t, func(t *testing.T, s *store.Store) {
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

func TestUpdate(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		if err := s.Create(ctx, order("o1", "u1", "k1", t0)); err != nil {
			t.Fatal(err)
		}
		later := t0.Add(time.Second)
		tests := []struct {
			name       string
			id         string
			change     func(*domain.Order) error
			wantErr    error
			wantStatus domain.Status
		}{
			{"missing", "nope", func(*domain.Order) error { return nil }, domain.ErrNotFound, domain.StatusPending},
			{"failing change is not saved", "o1", func(o *domain.Order) error {
				_ = o.MarkPaid("p0", later)
				return errors.New("boom")
			}, nil, domain.StatusPending},
			{"declined", "o1", func(o *domain.Order) error { return o.MarkPaymentFailed("p1", "PAYMENT_DECLINED", later) }, nil, domain.StatusPaymentFailed},
			{"no second transition", "o1", func(o *domain.Order) error { return o.MarkPaid("p2", later) }, domain.ErrInvalidTransition, domain.StatusPaymentFailed},
		}
		for _, tt := range tests {
			_, err := s.Update(ctx, tt.id, tt.change)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("%s: error %v, want %v", tt.name, err, tt.wantErr)
			}
			got, _ := s.ByID(ctx, "o1")
			if got.Status != tt.wantStatus {
				t.Fatalf("%s: stored status %s, want %s", tt.name, got.Status, tt.wantStatus)
			}
		}
		got, _ := s.ByID(ctx, "o1")
		if got.PaymentID != "p1" || got.FailureReason != "PAYMENT_DECLINED" || !got.UpdateTime.Equal(later) || !got.CreateTime.Equal(t0) || len(got.Items) != 3 {
			t.Fatalf("stored %+v", got)
		}
	})
}

func TestDeletePending(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		for _, o := range []*domain.Order{order("pending", "u", "k1", t0), order("paid", "u", "k2", t0)} {
			if err := s.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Update(ctx, "paid", func(o *domain.Order) error { return o.MarkPaid("p", t0) }); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"pending", "paid", "missing"} {
			if err := s.DeletePending(ctx, id); err != nil {
				t.Fatalf("DeletePending(%s): %v", id, err)
			}
		}
		if _, err := s.ByID(ctx, "pending"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("pending order survived: %v", err)
		}
		if _, err := s.ByID(ctx, "paid"); err != nil {
			t.Fatalf("paid order deleted: %v", err)
		}
		// The key is free again: a retry of the rejected request starts afresh.
		if err := s.Create(ctx, order("again", "u", "k1", t0)); err != nil {
			t.Fatalf("Create after delete: %v", err)
		}
	})
}

func TestListByUser(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		// Ten orders of u1 in five timestamps (ids break ties), shuffled
		// insertion, and orders of another user in between.
		var want []string
		for i := range 10 {
			id := fmt.Sprintf("o%02d", i)
			want = append(want, id)
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
