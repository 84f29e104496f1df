package store_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	"github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/store"
)

// outboxRow is one event appended to the outbox.
type outboxRow struct {
	subject, typ, aggregate string
	payload                 []byte
}

func outbox(t *testing.T, s *store.Store) []outboxRow {
	t.Helper()
	rows, err := s.DB().QueryContext(t.Context(), "SELECT subject, type, aggregate_id, payload FROM events_outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.subject, &r.typ, &r.aggregate, &r.payload); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEventsCommitWithTheirChange: each change appends its events in its
// own transaction; a change that fails leaves no event behind.
func TestEventsCommitWithTheirChange(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		var notified atomic.Int32
		s.OnAppend(func() { notified.Add(1) })
		p := payment("p1", "k1", 1000, domain.StatusCaptured)
		steps := []struct {
			name    string
			do      func() error
			wantErr error
			// wantRows is the outbox size after the step.
			wantRows int
		}{
			{name: "create", do: func() error {
				return s.Create(ctx, p, domain.Event{Kind: domain.EventCaptured, Payment: *p})
			}, wantRows: 1},
			{name: "duplicate create", do: func() error {
				q := payment("p2", "k1", 1000, domain.StatusCaptured)
				return s.Create(ctx, q, domain.Event{Kind: domain.EventCaptured, Payment: *q})
			}, wantErr: domain.ErrDuplicate, wantRows: 1},
			{name: "refund", do: func() error {
				_, err := s.Refund(ctx, "p1", "", func(p *domain.Payment, _ *domain.Refund) (*domain.Refund, []domain.Event, error) {
					p.RefundedUnits, p.Status = 400, domain.StatusPartiallyRefunded
					r := &domain.Refund{ID: "r1", PaymentID: "p1", Units: 400, Status: domain.RefundDone, CreateTime: t0}
					return r, []domain.Event{{Kind: domain.EventRefunded, Payment: *p, Amount: domain.Money{Currency: "EUR", Units: 400}}}, nil
				})
				return err
			}, wantRows: 2},
			{name: "refund over the charge", do: func() error {
				_, err := s.Refund(ctx, "p1", "", func(p *domain.Payment, _ *domain.Refund) (*domain.Refund, []domain.Event, error) {
					p.RefundedUnits = 2000
					r := &domain.Refund{ID: "r2", PaymentID: "p1", Units: 1600, Status: domain.RefundDone, CreateTime: t0}
					return r, []domain.Event{{Kind: domain.EventRefunded, Payment: *p}}, nil
				})
				return err
			}, wantErr: errAny, wantRows: 2},
		}
		for _, st := range steps {
			err := st.do()
			if (st.wantErr == nil) != (err == nil) || (st.wantErr != nil && st.wantErr != errAny && !errors.Is(err, st.wantErr)) {
				t.Fatalf("%s: error %v, want %v", st.name, err, st.wantErr)
			}
			if got := len(outbox(t, s)); got != st.wantRows {
				t.Fatalf("%s: %d outbox rows, want %d", st.name, got, st.wantRows)
			}
		}
		if notified.Load() != 2 {
			t.Errorf("OnAppend called %d times, want 2 (once per committed change)", notified.Load())
		}
		rows := outbox(t, s)
		var refunded paymentv1.PaymentRefunded
		if err := proto.Unmarshal(rows[1].payload, &refunded); err != nil {
			t.Fatal(err)
		}
		if rows[0].subject != "payment.captured" || rows[0].typ != "duet.payment.v1.PaymentCaptured" || rows[0].aggregate != "p1" ||
			rows[1].subject != "payment.refunded" || refunded.GetAmount().GetUnits() != 400 ||
			refunded.GetPayment().GetRefunded().GetUnits() != 400 || refunded.GetPayment().GetUserId() != "user-p1" {
			t.Errorf("outbox = %+v, refunded = %v", rows, &refunded)
		}
	})
}

// errAny stands for "some error" in step tables.
var errAny = errors.New("any error")

func TestCancelledCharges(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		if err := s.Create(ctx, payment("p1", "charged", 100, domain.StatusCaptured)); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name    string
			do      func() error
			wantErr error
		}{
			{"cancel an uncharged key", func() error { return s.CancelUncharged(ctx, "k", t0) }, nil},
			{"cancel it again", func() error { return s.CancelUncharged(ctx, "k", t0) }, nil},
			{"charge the cancelled key", func() error { return s.Create(ctx, payment("p2", "k", 100, domain.StatusCaptured)) }, domain.ErrChargeCancelled},
			{"cancel a charged key", func() error { return s.CancelUncharged(ctx, "charged", t0) }, domain.ErrDuplicate},
		}
		for _, st := range steps {
			if err := st.do(); !errors.Is(err, st.wantErr) {
				t.Fatalf("%s: %v, want %v", st.name, err, st.wantErr)
			}
		}
		for key, want := range map[string]bool{"k": true, "charged": false, "other": false} {
			if got, err := s.ChargeCancelled(ctx, key); err != nil || got != want {
				t.Errorf("ChargeCancelled(%s) = %v, %v; want %v", key, got, err, want)
			}
		}
	})
}

// TestChargeAndCancelRace: concurrent charges and cancels of one key leave
// it charged or cancelled, never both.
func TestChargeAndCancelRace(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *store.Store) {
		ctx := t.Context()
		for round := range 10 {
			key := "race-" + string(rune('a'+round))
			var (
				wg               sync.WaitGroup
				created, cancels atomic.Int32
				unexpected       = make(chan error, 8)
			)
			for i := range 4 {
				wg.Go(func() {
					err := s.Create(ctx, payment(key+"-"+string(rune('0'+i)), key, 100, domain.StatusCaptured))
					switch {
					case err == nil:
						created.Add(1)
					case !errors.Is(err, domain.ErrDuplicate) && !errors.Is(err, domain.ErrChargeCancelled):
						unexpected <- err
					}
				})
				wg.Go(func() {
					err := s.CancelUncharged(ctx, key, t0)
					switch {
					case err == nil:
						cancels.Add(1)
					case !errors.Is(err, domain.ErrDuplicate):
						unexpected <- err
					}
				})
			}
			wg.Wait()
			close(unexpected)
			for err := range unexpected {
				t.Fatal(err)
			}
			cancelled, err := s.ChargeCancelled(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.ByIdempotencyKey(ctx, key)
			charged := err == nil
			if charged == cancelled || (created.Load() > 0) != charged || created.Load() > 1 || (cancels.Load() > 0) != cancelled {
				t.Fatalf("%s: charged %v (%d creates), cancelled %v (%d cancels); want exactly one of them",
					key, charged, created.Load(), cancelled, cancels.Load())
			}
		}
	})
}
