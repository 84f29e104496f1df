package domain

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// failures collects what Service.RefundFailed hears.
type failures struct {
	mu   sync.Mutex
	errs []error
}

func (f *failures) hear(_ context.Context, _ Refund, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.errs)
}

// refundedEvents counts the EventRefunded recorded.
func refundedEvents(repo *memRepo) []Event {
	var out []Event
	for _, e := range repo.recorded() {
		if e.Kind == EventRefunded {
			out = append(out, e)
		}
	}
	return out
}

// TestRefundReachesProvider: a refund is asked of the provider, under the
// refund's own id and the charge's key, and reported only once it confirmed.
func TestRefundReachesProvider(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	prov := &countingProvider{next: tokenProvider{}}
	svc := NewService(repo, prov)
	p, err := svc.Charge(ctx, ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "c"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 300}})
	if err != nil {
		t.Fatal(err)
	}
	refunds := repo.refundList()
	if len(refunds) != 1 || refunds[0].Status != RefundDone {
		t.Fatalf("refunds %+v, want one done", refunds)
	}
	want := []ProviderRefund{{IdempotencyKey: refunds[0].ID, ChargeKey: "c", Amount: usd(300)}}
	if asked := prov.refunds(); len(asked) != 1 || asked[0] != want[0] {
		t.Fatalf("provider asked %+v, want %+v", asked, want)
	}
	if got.RefundedUnits != 300 || got.PendingRefundUnits != 0 || got.Status != StatusPartiallyRefunded {
		t.Fatalf("payment %+v, want 300 refunded, none pending", got)
	}
	if evs := refundedEvents(repo); len(evs) != 1 || evs[0].Amount != usd(300) || evs[0].Payment.PendingRefundUnits != 0 {
		t.Fatalf("refunded events %+v, want one of 300 with nothing pending", evs)
	}
}

// TestRefundPendingWhileProviderFails: a refund the provider does not
// confirm is still decided (no error, the amount counted), stays pending
// with no event, and is completed by whatever asks again: ResumeRefunds, a
// keyed repeat, or a CancelCharge of the payment.
func TestRefundPendingWhileProviderFails(t *testing.T) {
	tests := []struct {
		name string
		// again asks for the pending refund a second time.
		again func(t *testing.T, svc *Service, p *Payment)
	}{
		{"resumed", func(t *testing.T, svc *Service, _ *Payment) {
			if n, err := svc.ResumeRefunds(t.Context(), 0, 10); n != 1 || err != nil {
				t.Fatalf("ResumeRefunds = %d, %v; want 1", n, err)
			}
		}},
		{"keyed repeat", func(t *testing.T, svc *Service, p *Payment) {
			if _, err := svc.Refund(t.Context(), RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 1000}, IdempotencyKey: "r"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"cancel charge", func(t *testing.T, svc *Service, _ *Payment) {
			if _, err := svc.CancelCharge(t.Context(), "c"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			repo := newMemRepo()
			prov := &countingProvider{next: tokenProvider{}, refundErrs: []error{ErrProviderUnavailable}}
			svc := NewService(repo, prov)
			var heard failures
			svc.RefundFailed = heard.hear
			p, err := svc.Charge(ctx, ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "c"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 1000}, IdempotencyKey: "r"})
			if err != nil {
				t.Fatalf("Refund with the provider failing = %v, want the payment", err)
			}
			if got.RefundedUnits != 1000 || got.PendingRefundUnits != 1000 || got.Status != StatusRefunded {
				t.Fatalf("payment %+v, want 1000 refunded, all of it pending", got)
			}
			if heard.count() != 1 || len(refundedEvents(repo)) != 0 || len(prov.refunds()) != 0 {
				t.Fatalf("heard %d failures, %d refunded events, provider refunded %d; want 1, 0, 0",
					heard.count(), len(refundedEvents(repo)), len(prov.refunds()))
			}
			// Refunds nothing more: the amount is taken.
			if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 1}}); !errors.Is(err, ErrRefundExceedsCharge) {
				t.Fatalf("refund beyond a pending one = %v, want ErrRefundExceedsCharge", err)
			}

			tt.again(t, svc, p)
			after, err := svc.Payment(ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			if after.RefundedUnits != 1000 || after.PendingRefundUnits != 0 {
				t.Fatalf("payment after asking again %+v, want 1000 refunded, none pending", after)
			}
			if evs := refundedEvents(repo); len(evs) != 1 || evs[0].Amount != usd(1000) {
				t.Fatalf("refunded events %+v, want one of 1000", evs)
			}
			if asked := prov.refunds(); len(asked) != 1 || asked[0].ChargeKey != "c" {
				t.Fatalf("provider refunded %+v, want the one refund", asked)
			}
			// Nothing is left to resume.
			if n, err := svc.ResumeRefunds(ctx, 0, 10); n != 0 || err != nil {
				t.Fatalf("ResumeRefunds after = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestResumeRefundsWaitsOlderThan: ResumeRefunds leaves refunds younger
// than it is told, which the request that made them may still be settling.
func TestResumeRefundsWaitsOlderThan(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	prov := &countingProvider{next: tokenProvider{}, refundErrs: []error{ErrProviderUnavailable}}
	svc := NewService(repo, prov)
	now := time.Unix(1700000000, 0).UTC()
	svc.Now = func() time.Time { return now }
	p, err := svc.Charge(ctx, ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID}); err != nil {
		t.Fatal(err)
	}
	if n, err := svc.ResumeRefunds(ctx, time.Minute, 10); n != 0 || err != nil {
		t.Fatalf("ResumeRefunds of a refund a second old = %d, %v; want 0", n, err)
	}
	now = now.Add(time.Minute)
	if n, err := svc.ResumeRefunds(ctx, time.Minute, 10); n != 1 || err != nil {
		t.Fatalf("ResumeRefunds a minute later = %d, %v; want 1", n, err)
	}
}

// TestResumeRefundsKeepsGoing: a refund the provider fails again is
// reported and left pending while the others complete.
func TestResumeRefundsKeepsGoing(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	prov := &countingProvider{next: tokenProvider{}, refundErrs: []error{ErrProviderUnavailable, ErrProviderUnavailable}}
	svc := NewService(repo, prov)
	var heard failures
	svc.RefundFailed = heard.hear
	p, err := svc.Charge(ctx, ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "c"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 100}}); err != nil {
			t.Fatal(err)
		}
	}
	// The second refund's settle asked for both: the first was refused
	// again, the second confirmed.
	prov.mu.Lock()
	prov.refundErrs = []error{ErrProviderUnavailable}
	prov.mu.Unlock()
	if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 100}}); err != nil {
		t.Fatal(err)
	}
	got, _ := svc.Payment(ctx, p.ID)
	if got.PendingRefundUnits != 100 || got.RefundedUnits != 300 {
		t.Fatalf("payment %+v, want 300 refunded, 100 pending", got)
	}
	if n, err := svc.ResumeRefunds(ctx, 0, 10); n != 1 || err != nil {
		t.Fatalf("ResumeRefunds = %d, %v; want 1", n, err)
	}
	if heard.count() != 3 || len(refundedEvents(repo)) != 3 {
		t.Fatalf("heard %d failures, %d refunded events; want 3 and 3", heard.count(), len(refundedEvents(repo)))
	}
}
