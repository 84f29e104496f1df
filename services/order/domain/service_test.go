package domain

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestServiceCreate(t *testing.T) {
	f := newFixture()
	req := request(priced("A", 2, "USD", 300), item("B", 1))
	req.RequestID = "req-1"
	o, err := f.svc.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != StatusPending || o.Step != StepCheckUser || o.Version != 1 || o.Priced() || o.PaymentToken != "tok_approve" ||
		o.RequestID != "req-1" || !o.NextAttempt.Equal(t0) || !o.StepDeadline.IsZero() ||
		o.Items[0].Expected == nil || o.Items[1].Expected != nil {
		t.Fatalf("Create() = %+v", o)
	}
	if stored, _ := f.repo.ByID(t.Context(), o.ID); stored == nil || stored.Fingerprint != req.Fingerprint() {
		t.Fatalf("stored %+v", stored)
	}
	if !slices.Equal(f.sched.ids, []string{o.ID}) {
		t.Fatalf("scheduled %v, want [%s]", f.sched.ids, o.ID)
	}
	if len(f.peers.calls) != 0 {
		t.Fatalf("Create called peers %v; the saga does that", f.peers.calls)
	}

	bad := request()
	if _, err := f.svc.Create(t.Context(), bad); err == nil || f.repo.count() != 1 {
		t.Fatalf("invalid request: %v, %d orders", err, f.repo.count())
	}
}

func TestServiceCreateIdempotency(t *testing.T) {
	t.Run("repeat returns the order and schedules it again while pending", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1))
		o1, err1 := f.svc.Create(t.Context(), req)
		req.RequestID = "another attempt"
		o2, err2 := f.svc.Create(t.Context(), req)
		if err1 != nil || err2 != nil || o1.ID != o2.ID || f.repo.count() != 1 || len(f.sched.ids) != 2 {
			t.Fatalf("got %+v, %v and %+v, %v; %d orders, scheduled %v", o1, err1, o2, err2, f.repo.count(), f.sched.ids)
		}
		f.run(t, o1.ID)
		o3, err := f.svc.Create(t.Context(), req)
		if err != nil || o3.Status != StatusConfirmed || len(f.sched.ids) != 2 {
			t.Fatalf("repeat after the end = %+v, %v; scheduled %v", o3, err, f.sched.ids)
		}
	})
	t.Run("different request under the key", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1))
		if _, err := f.svc.Create(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		req.Items[0].Quantity = 2
		if _, err := f.svc.Create(t.Context(), req); !errors.Is(err, ErrIdempotencyKeyReused) {
			t.Fatalf("Create() = %v, want ErrIdempotencyKeyReused", err)
		}
	})
	t.Run("another user's key is theirs", func(t *testing.T) {
		// Keys are each user's: two users who pick the same key (a
		// counter, say) place an order each. The second was refused as
		// a reused key, which also told it someone had used the key.
		f := newFixture()
		req := request(item("A", 1))
		o1, err := f.svc.Create(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		req.UserID = "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a12"
		o2, err := f.svc.Create(t.Context(), req)
		if err != nil || o2.ID == o1.ID || o2.UserID != req.UserID || f.repo.count() != 2 {
			t.Fatalf("another user's Create with the key = %+v, %v; %d orders, want a second order", o2, err, f.repo.count())
		}
	})
	t.Run("losing the insert race returns the winner", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1))
		f.repo.raceWinner = &Order{ID: "winner", UserID: alice, Status: StatusPending, Step: StepCheckUser,
			IdempotencyKey: req.IdempotencyKey, Fingerprint: req.Fingerprint(), Version: 1}
		o, err := f.svc.Create(t.Context(), req)
		if err != nil || o.ID != "winner" || f.repo.count() != 1 || !slices.Equal(f.sched.ids, []string{"winner"}) {
			t.Fatalf("Create() = %+v, %v; %d orders, scheduled %v", o, err, f.repo.count(), f.sched.ids)
		}
	})
}

func TestServicePending(t *testing.T) {
	f := newFixture()
	a, b := f.create(t), f.create(t)
	_ = a
	f.peers.set("CheckUser", errDown)
	if _, _, err := f.svc.Step(t.Context(), b.ID); err != nil {
		t.Fatal(err)
	}
	ids, err := f.svc.Pending(t.Context(), f.now, 10)
	if err != nil || !slices.Equal(ids, []string{a.ID}) {
		t.Fatalf("Pending(now) = %v, %v; want only the order that is due", ids, err)
	}
	ids, _ = f.svc.Pending(t.Context(), f.now.Add(time.Hour), 10)
	if len(ids) != 2 {
		t.Fatalf("Pending(later) = %v, want both", ids)
	}
}

func TestServiceList(t *testing.T) {
	f := newFixture()
	base := time.Unix(1800000000, 0).UTC()
	n := 0
	f.svc.Now = func() time.Time {
		n++
		// Pairs of orders share a timestamp, so ids must break ties.
		return base.Add(time.Duration(n/4) * time.Second)
	}
	var want []string
	for i := range 7 {
		req := request(item("A", 1))
		req.IdempotencyKey = fmt.Sprint("key-", i)
		o, err := f.svc.Create(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, o.ID)
	}
	tests := []struct {
		pageSize  int
		wantPages int
	}{
		{1, 7}, {2, 4}, {3, 3}, {7, 1}, {0, 1}, {1000, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("page size ", tt.pageSize), func(t *testing.T) {
			var (
				got   []string
				after *Position
				pages int
			)
			for {
				page, next, err := f.svc.List(t.Context(), alice, after, tt.pageSize)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, o := range page {
					got = append(got, o.ID)
				}
				if next == nil {
					break
				}
				after = next
			}
			if pages != tt.wantPages || !slices.Equal(got, want) {
				t.Fatalf("%d pages, %v; want %d pages, %v", pages, got, tt.wantPages, want)
			}
		})
	}
	if _, _, err := f.svc.List(t.Context(), alice, nil, -1); err == nil {
		t.Fatal("negative page size accepted")
	}
	if page, next, err := f.svc.List(t.Context(), "nobody", nil, 10); err != nil || len(page) != 0 || next != nil {
		t.Fatalf("List(nobody) = %v, %v, %v", page, next, err)
	}
}

// TestServiceCreateOverloaded: while the Scheduler is full, a new order is
// refused before anything is stored; a repeat of an order already placed
// is still answered, and a different request under its key still refused
// as such.
func TestServiceCreateOverloaded(t *testing.T) {
	f := newFixture()
	placed := f.create(t)
	f.sched.mu.Lock()
	f.sched.full = true
	f.sched.mu.Unlock()

	req := request(item("A", 2), item("B", 1))
	req.IdempotencyKey = "new-key"
	if o, err := f.svc.Create(t.Context(), req); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Create while full = %+v, %v; want ErrOverloaded", o, err)
	}
	if n := f.repo.count(); n != 1 {
		t.Errorf("%d orders stored, want the one placed before", n)
	}
	req.IdempotencyKey = placed.IdempotencyKey
	if o, err := f.svc.Create(t.Context(), req); err != nil || o.ID != placed.ID {
		t.Errorf("repeat while full = %+v, %v; want the order placed", o, err)
	}
	// The lookup while full is the user's own: another user's request
	// under the key is a new order, refused while full.
	other := req
	other.UserID = "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a12"
	if o, err := f.svc.Create(t.Context(), other); !errors.Is(err, ErrOverloaded) {
		t.Errorf("another user's request under the key while full = %+v, %v; want ErrOverloaded", o, err)
	}
	req.Items = []LineItem{item("C", 1)}
	if _, err := f.svc.Create(t.Context(), req); !errors.Is(err, ErrIdempotencyKeyReused) {
		t.Errorf("another request under the key while full = %v, want ErrIdempotencyKeyReused", err)
	}
}
