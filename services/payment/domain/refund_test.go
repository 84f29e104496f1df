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

// charged returns a service over a fresh memRepo and prov, on a clock the
// test moves, what its RefundFailed hears, and a payment of 1000 it
// captured under the key "c".
func charged(t *testing.T, prov Provider) (*Service, *memRepo, *clock, *failures, *Payment) {
	t.Helper()
	repo := newMemRepo()
	svc := NewService(repo, prov)
	c := newClock()
	svc.Now = c.Now
	heard := &failures{}
	svc.RefundFailed = heard.hear
	p, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "c"})
	if err != nil {
		t.Fatal(err)
	}
	return svc, repo, c, heard, p
}

// TestRefundReachesProvider: a refund is asked of the provider, under the
// refund's own id and the charge's key, and reported only once it confirmed.
func TestRefundReachesProvider(t *testing.T) {
	ctx := t.Context()
	prov := &countingProvider{next: tokenProvider{}}
	svc, repo, _, _, p := charged(t, prov)
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

// clock is a settable Service.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1700000000, 0).UTC()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRefundPendingWhileProviderFails: a refund the provider does not
// confirm is still decided (no error, the amount counted), stays pending
// with no event, and is completed by whatever asks again: ResumeRefunds
// once it is due, a keyed repeat, or a CancelCharge of the payment.
func TestRefundPendingWhileProviderFails(t *testing.T) {
	tests := []struct {
		name string
		// again asks for the pending refund a second time.
		again func(t *testing.T, svc *Service, c *clock, p *Payment)
	}{
		{"resumed", func(t *testing.T, svc *Service, c *clock, _ *Payment) {
			if n, _, err := svc.ResumeRefunds(t.Context(), 10); n != 0 || err != nil {
				t.Fatalf("ResumeRefunds before the refund is due = %d, %v; want 0", n, err)
			}
			c.advance(DefaultRefundRetry)
			if n, more, err := svc.ResumeRefunds(t.Context(), 10); n != 1 || more || err != nil {
				t.Fatalf("ResumeRefunds once due = %d, %v, %v; want 1, no more", n, more, err)
			}
		}},
		{"keyed repeat", func(t *testing.T, svc *Service, _ *clock, p *Payment) {
			if _, err := svc.Refund(t.Context(), RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 1000}, IdempotencyKey: "r"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"cancel charge", func(t *testing.T, svc *Service, _ *clock, _ *Payment) {
			if _, err := svc.CancelCharge(t.Context(), "c"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			prov := &countingProvider{next: tokenProvider{}, refundErrs: []error{ErrProviderUnavailable}}
			svc, repo, c, heard, p := charged(t, prov)
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

			tt.again(t, svc, c, p)
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
			// Nothing is left to resume, however late.
			c.advance(24 * time.Hour)
			if n, _, err := svc.ResumeRefunds(ctx, 10); n != 0 || err != nil {
				t.Fatalf("ResumeRefunds after = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestResumeRefundsBacksOff: a refund the provider keeps refusing is
// asked again later each time (RefundRetry after it was made, then twice
// as long after each attempt), and a refund made after it is not held up.
func TestResumeRefundsBacksOff(t *testing.T) {
	ctx := t.Context()
	prov := &countingProvider{next: tokenProvider{}, refundErrs: []error{ErrProviderUnavailable, ErrProviderUnavailable}}
	svc, repo, c, heard, p := charged(t, prov)
	svc.RefundRetry = time.Minute
	// The first refund's own settle fails; the second is recorded a
	// second later and its settle asks for both: the first is refused
	// again, the second confirmed.
	if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 100}}); err != nil {
		t.Fatal(err)
	}
	c.advance(time.Second)
	if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 200}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := svc.Payment(ctx, p.ID); got.PendingRefundUnits != 100 || got.RefundedUnits != 300 {
		t.Fatalf("payment %+v, want 300 refunded, 100 pending", got)
	}
	first := repo.refundList()[0]
	// Each step: how long to wait, whether the provider then refuses,
	// and how many ResumeRefunds should complete.
	steps := []struct {
		wait     time.Duration
		refuse   bool
		complete int
	}{
		{58 * time.Second, false, 0},   // not due: due a minute after it was made
		{time.Second, true, 0},         // due, refused: next after two minutes
		{119 * time.Second, false, 0},  // not due yet
		{time.Second, true, 0},         // refused again: next after four minutes
		{239 * time.Second, false, 0},  // not due yet
		{time.Second, false, 1},        // confirmed
		{MaxRefundRetry * 2, false, 0}, // nothing left
	}
	for i, st := range steps {
		c.advance(st.wait)
		if st.refuse {
			prov.mu.Lock()
			prov.refundErrs = []error{ErrProviderUnavailable}
			prov.mu.Unlock()
		}
		if n, _, err := svc.ResumeRefunds(ctx, 10); n != st.complete || err != nil {
			t.Fatalf("step %d: ResumeRefunds = %d, %v; want %d", i, n, err, st.complete)
		}
	}
	if heard.count() != 4 || len(refundedEvents(repo)) != 2 {
		t.Fatalf("heard %d failures, %d refunded events; want 4 and 2", heard.count(), len(refundedEvents(repo)))
	}
	if got := repo.refundList()[0]; got.ID != first.ID || got.Status != RefundDone || got.Attempts != 3 {
		t.Fatalf("first refund %+v, want done after 3 attempts", got)
	}
}

// TestResumeRefundsKeepsGoing: among due refunds, one the provider
// refuses is reported and left while the next is completed.
func TestResumeRefundsKeepsGoing(t *testing.T) {
	ctx := t.Context()
	// The two refunds' own settles fail, then the first resumed one.
	prov := &countingProvider{next: tokenProvider{}, refundErrs: []error{ErrProviderUnavailable, ErrProviderUnavailable, ErrProviderUnavailable, ErrProviderUnavailable}}
	svc, repo, c, heard, p := charged(t, prov)
	for range 2 {
		if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 100}}); err != nil {
			t.Fatal(err)
		}
		c.advance(time.Second)
	}
	if heard.count() != 3 { // the first settle asked for one, the second for both
		t.Fatalf("heard %d failures before resuming, want 3", heard.count())
	}
	c.advance(DefaultRefundRetry)
	if n, more, err := svc.ResumeRefunds(ctx, 10); n != 1 || more || err != nil {
		t.Fatalf("ResumeRefunds = %d, %v, %v; want 1", n, more, err)
	}
	if got, _ := svc.Payment(ctx, p.ID); got.PendingRefundUnits != 100 || heard.count() != 4 || len(refundedEvents(repo)) != 1 {
		t.Fatalf("payment %+v, heard %d, %d events; want 100 pending, 4 failures, 1 event", got, heard.count(), len(refundedEvents(repo)))
	}
	// A batch as large as its limit says there may be more. The refused
	// refund is due again twice RefundRetry after its attempt.
	c.advance(2 * DefaultRefundRetry)
	if n, more, err := svc.ResumeRefunds(ctx, 1); n != 1 || !more || err != nil {
		t.Fatalf("ResumeRefunds(limit 1) = %d, %v, %v; want 1, more", n, more, err)
	}
}

// hangingProvider answers refunds only when the call's context ends.
type hangingProvider struct{ tokenProvider }

func (hangingProvider) Refund(ctx context.Context, _ ProviderRefund) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestRefundAnswersWithinTheDeadline: a provider that hangs does not hold
// the refund's answer past half the caller's deadline: the refund is
// decided, so the caller gets the payment, its amount pending, rather than
// a DEADLINE_EXCEEDED it would take for "nothing happened".
func TestRefundAnswersWithinTheDeadline(t *testing.T) {
	svc, _, _, _, p := charged(t, hangingProvider{})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	got, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID})
	if err != nil || ctx.Err() != nil {
		t.Fatalf("Refund = %v with the caller's context %v; want an answer before its deadline", err, ctx.Err())
	}
	if got.PendingRefundUnits != 1000 {
		t.Fatalf("payment %+v, want all of it pending", got)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if got, err := svc.CancelCharge(ctx, "c"); err != nil || ctx.Err() != nil || got.PendingRefundUnits != 1000 {
		t.Fatalf("CancelCharge = %+v, %v with the caller's context %v; want the payment, pending, before the deadline", got, err, ctx.Err())
	}
}

// TestResumeRefundsStopsWhenClaimsFail: a database that reads but refuses
// writes fails every claim; ResumeRefunds returns the error, and no more,
// instead of reading the same due refunds again at once.
func TestResumeRefundsStopsWhenClaimsFail(t *testing.T) {
	ctx := t.Context()
	// The two refunds' own settles fail: the first's, then the second's
	// for both.
	prov := &countingProvider{next: tokenProvider{}, refundErrs: []error{ErrProviderUnavailable, ErrProviderUnavailable, ErrProviderUnavailable}}
	svc, repo, c, _, p := charged(t, prov)
	for range 2 {
		if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 100}}); err != nil {
			t.Fatal(err)
		}
	}
	c.advance(time.Hour)
	repo.claimErr = errors.New("read-only transaction")
	if n, more, err := svc.ResumeRefunds(ctx, 2); n != 0 || more || err == nil {
		t.Fatalf("ResumeRefunds with claims failing = %d, %v, %v; want 0, no more, the error", n, more, err)
	}
	if got := prov.refunds(); len(got) != 0 {
		t.Fatalf("provider refunded %+v, want nothing asked of it unclaimed", got)
	}
}

// gatedProvider holds each refund until released, or until the call's
// context ends.
type gatedProvider struct {
	tokenProvider
	asked, release chan struct{}
}

func (g gatedProvider) Refund(ctx context.Context, _ ProviderRefund) error {
	g.asked <- struct{}{}
	select {
	case <-g.release:
		// Released after the test's caller went: the call's context
		// must not have gone with it.
		return ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestRefundOutlivesItsCaller: a caller that goes away while the provider
// is being asked does not leave the refund pending: the provider's answer
// is still taken and recorded.
func TestRefundOutlivesItsCaller(t *testing.T) {
	prov := gatedProvider{asked: make(chan struct{}), release: make(chan struct{})}
	svc, repo, _, _, p := charged(t, prov)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *Payment)
	go func() {
		got, _ := svc.Refund(ctx, RefundRequest{PaymentID: p.ID})
		done <- got
	}()
	<-prov.asked
	cancel() // the caller goes; the provider has not answered yet
	close(prov.release)
	got := <-done
	if got.PendingRefundUnits != 0 || len(refundedEvents(repo)) != 1 {
		t.Fatalf("payment %+v with %d refunded events, want the refund done", got, len(refundedEvents(repo)))
	}
}
