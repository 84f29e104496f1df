package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/simulator"
	"github.com/duetkit/duet/services/payment/store"
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

func payment(id, key string, units int64, status domain.Status) *domain.Payment {
	return &domain.Payment{
		ID: id, Amount: domain.Money{Currency: "EUR", Units: units}, Status: status,
		Reference: "ref-" + id, IdempotencyKey: key, Fingerprint: "fp-" + key, UserID: "user-" + id,
		CreateTime: t0, UpdateTime: t0,
	}
}

func TestCreateAndRead(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		want := payment("p1", "k1", 1999, domain.StatusCaptured)
		declined := payment("p2", "k2", 50, domain.StatusDeclined)
		declined.DeclineReason = domain.ReasonInsufficientFunds
		for _, p := range []*domain.Payment{want, declined} {
			if err := s.Create(ctx, p); err != nil {
				t.Fatalf("Create(%s): %v", p.ID, err)
			}
		}
		tests := []struct {
			name string
			read func() (*domain.Payment, error)
			want *domain.Payment
			err  error
		}{
			{"by id", func() (*domain.Payment, error) { return s.ByID(ctx, "p1") }, want, nil},
			{"by key", func() (*domain.Payment, error) { return s.ByIdempotencyKey(ctx, "k1") }, want, nil},
			{"declined by id", func() (*domain.Payment, error) { return s.ByID(ctx, "p2") }, declined, nil},
			{"missing id", func() (*domain.Payment, error) { return s.ByID(ctx, "nope") }, nil, domain.ErrNotFound},
			{"missing key", func() (*domain.Payment, error) { return s.ByIdempotencyKey(ctx, "nope") }, nil, domain.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := tt.read()
				if !errors.Is(err, tt.err) {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
				if tt.want != nil && *got != *tt.want {
					t.Fatalf("got %+v\nwant %+v", got, tt.want)
				}
			})
		}
	})
}

func TestCreateDuplicateKey(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		if err := s.Create(t.Context(), payment("p1", "k1", 10, domain.StatusCaptured)); err != nil {
			t.Fatal(err)
		}
		err := s.Create(t.Context(), payment("p2", "k1", 20, domain.StatusCaptured))
		if !errors.Is(err, domain.ErrDuplicate) {
			t.Fatalf("Create with a taken key = %v, want ErrDuplicate", err)
		}
	})
}

// TestConcurrentChargesOneKey races identical charges through the domain
// service: exactly one payment may exist afterwards, and every caller gets it.
func TestConcurrentChargesOneKey(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		svc := domain.NewService(s, simulator.Provider{})
		req := domain.ChargeRequest{Amount: domain.Money{Currency: "USD", Units: 700}, Token: simulator.TokenApprove, IdempotencyKey: "race"}
		const n = 8
		ids := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				p, err := svc.Charge(t.Context(), req)
				errs[i] = err
				if err == nil {
					ids[i] = p.ID
				}
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("caller %d: id %q err %v; want id %q", i, ids[i], errs[i], ids[0])
			}
		}
	})
}

func TestRefund(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		if err := s.Create(ctx, payment("p1", "k1", 1000, domain.StatusCaptured)); err != nil {
			t.Fatal(err)
		}
		svc := domain.NewService(s, simulator.Provider{})
		steps := []struct {
			name         string
			req          domain.RefundRequest
			wantErr      error
			wantRefunded int64
			wantStatus   domain.Status
		}{
			{"part", domain.RefundRequest{Amount: &domain.Money{Currency: "EUR", Units: 300}, IdempotencyKey: "a"}, nil, 300, domain.StatusPartiallyRefunded},
			{"keyed repeat", domain.RefundRequest{Amount: &domain.Money{Currency: "EUR", Units: 300}, IdempotencyKey: "a"}, nil, 300, domain.StatusPartiallyRefunded},
			{"key reused", domain.RefundRequest{Amount: &domain.Money{Currency: "EUR", Units: 200}, IdempotencyKey: "a"}, domain.ErrIdempotencyKeyReused, 300, domain.StatusPartiallyRefunded},
			{"too much", domain.RefundRequest{Amount: &domain.Money{Currency: "EUR", Units: 701}}, domain.ErrRefundExceedsCharge, 300, domain.StatusPartiallyRefunded},
			{"unkeyed part", domain.RefundRequest{Amount: &domain.Money{Currency: "EUR", Units: 200}}, nil, 500, domain.StatusPartiallyRefunded},
			{"rest", domain.RefundRequest{IdempotencyKey: "b"}, nil, 1000, domain.StatusRefunded},
			{"rest repeated", domain.RefundRequest{IdempotencyKey: "b"}, nil, 1000, domain.StatusRefunded},
			{"again", domain.RefundRequest{}, domain.ErrRefundExceedsCharge, 1000, domain.StatusRefunded},
		}
		for _, st := range steps {
			st.req.PaymentID = "p1"
			p, err := svc.Refund(ctx, st.req)
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("%s: error %v, want %v", st.name, err, st.wantErr)
			}
			stored, _ := s.ByID(ctx, "p1")
			if stored.RefundedUnits != st.wantRefunded || stored.Status != st.wantStatus {
				t.Fatalf("%s: stored %d %s, want %d %s", st.name, stored.RefundedUnits, stored.Status, st.wantRefunded, st.wantStatus)
			}
			if err == nil && (p.RefundedUnits != stored.RefundedUnits || p.Status != stored.Status) {
				t.Fatalf("%s: returned %+v, stored %+v", st.name, p, stored)
			}
		}
		refunds, err := s.Refunds(ctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, r := range refunds {
			sum += r.Units
		}
		if len(refunds) != 3 || sum != 1000 {
			t.Fatalf("%d refunds summing to %d, want 3 summing to 1000", len(refunds), sum)
		}
		if _, err := svc.Refund(ctx, domain.RefundRequest{PaymentID: "nope"}); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("refund of a missing payment = %v, want ErrNotFound", err)
		}
	})
}

// TestConcurrentRefunds races refunds that together ask for more than the
// charge: the total refunded must never exceed it, and every refund must be
// either applied in full or rejected as REFUND_EXCEEDS_CHARGE.
func TestConcurrentRefunds(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		if err := s.Create(ctx, payment("p1", "k1", 1000, domain.StatusCaptured)); err != nil {
			t.Fatal(err)
		}
		svc := domain.NewService(s, simulator.Provider{})
		const n = 16 // 16 × 100 asks for 1600 of 1000
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = svc.Refund(ctx, domain.RefundRequest{
					PaymentID: "p1", Amount: &domain.Money{Currency: "EUR", Units: 100}, IdempotencyKey: fmt.Sprint("r", i),
				})
			})
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, domain.ErrRefundExceedsCharge):
				t.Errorf("refund %d: %v", i, err)
			}
		}
		p, err := s.ByID(ctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		refunds, _ := s.Refunds(ctx, "p1")
		if ok != 10 || p.RefundedUnits != 1000 || p.Status != domain.StatusRefunded || len(refunds) != 10 {
			t.Fatalf("%d refunds succeeded, %d recorded, payment %d %s; want 10, 10, 1000 REFUNDED",
				ok, len(refunds), p.RefundedUnits, p.Status)
		}
	})
}

func TestRefundCheckConstraint(t *testing.T) {
	// The schema itself refuses to record more refunded than charged, even
	// if a bug let such a change through the domain.
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		if err := s.Create(ctx, payment("p1", "k1", 100, domain.StatusCaptured)); err != nil {
			t.Fatal(err)
		}
		_, err := s.Refund(ctx, "p1", "", func(p *domain.Payment, _ *domain.Refund) (*domain.Refund, []domain.Event, error) {
			p.RefundedUnits = 150
			return &domain.Refund{ID: "r1", PaymentID: "p1", Units: 150, Status: domain.RefundPending, CreateTime: t0}, nil, nil
		})
		if err == nil {
			t.Fatal("over-refund was stored")
		}
		p, _ := s.ByID(ctx, "p1")
		if refunds, _ := s.Refunds(ctx, "p1"); p.RefundedUnits != 0 || len(refunds) != 0 {
			t.Fatalf("a failed refund left traces: refunded %d, %d refunds", p.RefundedUnits, len(refunds))
		}
	})
}

// TestPendingRefunds: refunds are recorded pending, listed by payment
// (oldest first) or when due (in the order they fell due), claimed by one
// caller at a time, and completed once: the completion moves them out of
// the payment's pending amount with their event, a second one changes
// nothing.
func TestPendingRefunds(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		for _, p := range []*domain.Payment{payment("p1", "k1", 1000, domain.StatusCaptured), payment("p2", "k2", 1000, domain.StatusCaptured)} {
			if err := s.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		refund := func(id, paymentID string, units int64, at, due time.Time) domain.Refund {
			t.Helper()
			r := domain.Refund{ID: id, PaymentID: paymentID, Units: units, Status: domain.RefundPending, CreateTime: at, NextAttemptTime: due}
			if _, err := s.Refund(ctx, paymentID, "", func(p *domain.Payment, _ *domain.Refund) (*domain.Refund, []domain.Event, error) {
				p.RefundedUnits += units
				p.PendingRefundUnits += units
				p.Status = domain.StatusPartiallyRefunded
				return &r, nil, nil
			}); err != nil {
				t.Fatal(err)
			}
			return r
		}
		r1 := refund("r1", "p1", 400, t0, t0.Add(time.Minute))
		r2 := refund("r2", "p1", 100, t0.Add(2*time.Second), t0.Add(2*time.Second))
		refund("r3", "p2", 50, t0.Add(time.Second), t0.Add(3*time.Second))
		ids := func(rs []domain.Refund, err error) string {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			out := ""
			for _, r := range rs {
				out += r.ID + " "
			}
			return out
		}
		tests := []struct {
			name string
			list func() ([]domain.Refund, error)
			want string
		}{
			{"of a payment", func() ([]domain.Refund, error) { return s.PendingRefunds(ctx, "p1", 10) }, "r1 r2 "},
			{"of a payment, limited", func() ([]domain.Refund, error) { return s.PendingRefunds(ctx, "p1", 1) }, "r1 "},
			{"of a payment without any", func() ([]domain.Refund, error) { return s.PendingRefunds(ctx, "p3", 10) }, ""},
			{"due", func() ([]domain.Refund, error) { return s.DueRefunds(ctx, t0.Add(time.Hour), 10) }, "r2 r3 r1 "},
			{"due by then", func() ([]domain.Refund, error) { return s.DueRefunds(ctx, t0.Add(3*time.Second), 10) }, "r2 r3 "},
			{"due, limited", func() ([]domain.Refund, error) { return s.DueRefunds(ctx, t0.Add(time.Hour), 1) }, "r2 "},
			{"none due yet", func() ([]domain.Refund, error) { return s.DueRefunds(ctx, t0, 10) }, ""},
		}
		for _, tt := range tests {
			if got := ids(tt.list()); got != tt.want {
				t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
			}
		}
		if p, _ := s.ByID(ctx, "p1"); p.PendingRefundUnits != 500 || p.RefundedUnits != 500 {
			t.Fatalf("payment %+v, want 500 refunded, all pending", p)
		}

		// One claim of a refund as read wins; it counts the attempt and
		// moves the refund's turn.
		next := t0.Add(2 * time.Hour)
		if ok, err := s.ClaimRefund(ctx, r2, next); !ok || err != nil {
			t.Fatalf("ClaimRefund = %v, %v; want claimed", ok, err)
		}
		if ok, err := s.ClaimRefund(ctx, r2, next); ok || err != nil {
			t.Fatalf("ClaimRefund of the same read again = %v, %v; want not claimed", ok, err)
		}
		if got := ids(s.DueRefunds(ctx, t0.Add(time.Hour), 10)); got != "r3 r1 " {
			t.Fatalf("due after claiming r2 %q, want r3 r1", got)
		}
		if rs, _ := s.PendingRefunds(ctx, "p1", 10); len(rs) != 2 || rs[1].Attempts != 1 || !rs[1].NextAttemptTime.Equal(next) {
			t.Fatalf("pending of p1 %+v, want r2 claimed once, next at %v", rs, next)
		}

		report := func(p *domain.Payment) []domain.Event {
			return []domain.Event{{Kind: domain.EventRefunded, Payment: *p, Amount: domain.Money{Currency: "EUR", Units: r1.Units}}}
		}
		later := t0.Add(time.Minute)
		p, done, err := s.CompleteRefund(ctx, r1, later, report)
		if err != nil || !done || p.PendingRefundUnits != 100 || !p.UpdateTime.Equal(later) {
			t.Fatalf("CompleteRefund = %+v, %v, %v; want done, 100 pending, updated", p, done, err)
		}
		if p, done, err := s.CompleteRefund(ctx, r1, later, report); err != nil || done || p.PendingRefundUnits != 100 {
			t.Fatalf("CompleteRefund again = %+v, %v, %v; want not done, 100 pending", p, done, err)
		}
		if ok, err := s.ClaimRefund(ctx, r1, next); ok || err != nil {
			t.Fatalf("ClaimRefund of a done refund = %v, %v; want not claimed", ok, err)
		}
		if rows := outbox(t, s); len(rows) != 1 || rows[0].subject != "payment.refunded" {
			t.Fatalf("outbox %+v, want the one refunded event", rows)
		}
		if stored, _ := s.ByID(ctx, "p1"); stored.PendingRefundUnits != 100 || stored.RefundedUnits != 500 {
			t.Fatalf("stored payment %+v, want 500 refunded, 100 pending", stored)
		}
		refunds, err := s.Refunds(ctx, "p1")
		if err != nil || len(refunds) != 2 || refunds[0].Status != domain.RefundDone || refunds[1].Status != domain.RefundPending {
			t.Fatalf("refunds of p1 %+v, %v; want r1 done, r2 pending", refunds, err)
		}
	})
}

// TestPendingVoids: a cancelled key's void is marked due, listed when due,
// claimed by one caller at a time, and recorded done only under its
// latest mark.
func TestPendingVoids(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		for _, k := range []string{"k1", "k2"} {
			if err := s.CancelUncharged(ctx, k, t0); err != nil {
				t.Fatal(err)
			}
		}
		if due, err := s.DueVoids(ctx, t0.Add(time.Hour), 10); err != nil || len(due) != 0 {
			t.Fatalf("due voids of keys never marked = %+v, %v; want none", due, err)
		}
		if _, err := s.MarkVoidDue(ctx, "nope", t0, t0); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("MarkVoidDue of a key not cancelled = %v, want ErrNotFound", err)
		}
		m1, err := s.MarkVoidDue(ctx, "k1", t0, t0.Add(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.MarkVoidDue(ctx, "k2", t0, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		due, err := s.DueVoids(ctx, t0.Add(time.Hour), 10)
		if err != nil || len(due) != 2 || due[0].Key != "k2" || due[1].Key != "k1" || due[1].Mark != m1 {
			t.Fatalf("due voids = %+v, %v; want k2 then k1 (mark %d)", due, err, m1)
		}
		if due, _ := s.DueVoids(ctx, t0.Add(time.Second), 10); len(due) != 1 || due[0].Key != "k2" {
			t.Fatalf("due by t0+1s = %+v, want k2", due)
		}
		next := t0.Add(time.Hour)
		if ok, err := s.ClaimVoid(ctx, due[1], next); !ok || err != nil {
			t.Fatalf("ClaimVoid = %v, %v; want claimed", ok, err)
		}
		if ok, err := s.ClaimVoid(ctx, due[1], next); ok || err != nil {
			t.Fatalf("ClaimVoid of the same read again = %v, %v; want not claimed", ok, err)
		}
		if due, _ := s.DueVoids(ctx, next, 10); len(due) != 2 || due[1].Key != "k1" || due[1].Attempts != 1 ||
			!due[1].NextAttemptTime.Equal(next) || !due[1].Since.Equal(t0) {
			t.Fatalf("due after the claim = %+v, want k1 after one attempt, next at %v, since %v", due, next, t0)
		}
		// Marked again after the claim: the void under the old mark
		// leaves it due.
		m2, err := s.MarkVoidDue(ctx, "k1", t0, t0.Add(3*time.Second))
		if err != nil || m2 == m1 {
			t.Fatalf("second mark = %d, %v; want a new one", m2, err)
		}
		if done, err := s.VoidDone(ctx, "k1", m1); done || err != nil {
			t.Fatalf("VoidDone under the old mark = %v, %v; want not done", done, err)
		}
		if due, _ := s.DueVoids(ctx, t0.Add(time.Hour), 10); len(due) != 2 {
			t.Fatalf("due after the old mark's void = %+v, want k1 still due", due)
		}
		if done, err := s.VoidDone(ctx, "k1", m2); !done || err != nil {
			t.Fatalf("VoidDone under the latest mark = %v, %v; want done", done, err)
		}
		if due, _ := s.DueVoids(ctx, t0.Add(time.Hour), 10); len(due) != 1 || due[0].Key != "k2" || due[0].Attempts != 0 {
			t.Fatalf("due after k1's void = %+v, want k2 alone", due)
		}
		if cancelled, err := s.ChargeCancelled(ctx, "k1"); !cancelled || err != nil {
			t.Fatalf("k1 cancelled = %v, %v; the void must not undo the cancel", cancelled, err)
		}
		// A charge of a cancelled key, refused, leaves its void due at
		// once: the provider may have captured it.
		late := t0.Add(time.Minute)
		p := payment("p9", "k1", 100, domain.StatusCaptured)
		p.CreateTime, p.UpdateTime = late, late
		if err := s.Create(ctx, p); !errors.Is(err, domain.ErrChargeCancelled) {
			t.Fatalf("Create of a cancelled key = %v, want ErrChargeCancelled", err)
		}
		if due, _ := s.DueVoids(ctx, late, 10); len(due) != 2 || due[1].Key != "k1" || !due[1].Since.Equal(late) || due[1].Attempts != 0 {
			t.Fatalf("due after the refused charge = %+v, want k1 due since %v", due, late)
		}
		if _, err := s.ByID(ctx, "p9"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("the refused charge was stored: %v", err)
		}
	})
}
