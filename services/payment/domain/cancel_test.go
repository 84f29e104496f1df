package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

func TestServiceCancelCharge(t *testing.T) {
	tests := []struct {
		name string
		// before runs against the service before the cancels; it returns
		// the key to cancel.
		before func(t *testing.T, svc *Service) string
		// wantPayment: the cancel returns a payment (else nil).
		wantPayment  bool
		wantStatus   Status
		wantRefunded int64
		// wantEvents are the kinds recorded by the cancels (not before).
		wantEvents []EventKind
		// wantChargeErr is what a Charge with the key returns afterwards.
		wantChargeErr error
		// voids: the provider voids the key on each cancel and on the
		// charge afterwards (a key with no payment).
		voids bool
	}{
		{
			name:        "captured: refunded in full",
			before:      charge("k", "tok_approve", 0),
			wantPayment: true, wantStatus: StatusRefunded, wantRefunded: 1000,
			wantEvents: []EventKind{EventRefunded},
		},
		{
			name:        "partly refunded: the rest is refunded",
			before:      charge("k", "tok_approve", 300),
			wantPayment: true, wantStatus: StatusRefunded, wantRefunded: 1000,
			wantEvents: []EventKind{EventRefunded},
		},
		{
			name:        "refunded already: nothing to do",
			before:      charge("k", "tok_approve", 1000),
			wantPayment: true, wantStatus: StatusRefunded, wantRefunded: 1000,
		},
		{
			name:        "declined: nothing to refund",
			before:      charge("k", "tok_decline", 0),
			wantPayment: true, wantStatus: StatusDeclined,
			wantChargeErr: &DeclinedError{},
		},
		{
			name:          "never charged: the key is cancelled",
			before:        func(*testing.T, *Service) string { return "k" },
			wantChargeErr: ErrChargeCancelled,
			voids:         true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := newMemRepo()
			prov := &countingProvider{next: tokenProvider{}}
			svc := NewService(repo, prov)
			key := tt.before(t, svc)
			eventsBefore := len(repo.recorded())
			callsBefore := prov.calls
			// The second cancel is a repeat: a no-op with the same answer.
			for i := range 2 {
				p, err := svc.CancelCharge(t.Context(), key)
				if err != nil {
					t.Fatalf("cancel #%d: %v", i+1, err)
				}
				if want := voidsWanted(tt.voids, i+1); len(prov.voids()) != want {
					t.Fatalf("cancel #%d: the provider voided %v, want the key %d times", i+1, prov.voids(), want)
				}
				if (p != nil) != tt.wantPayment {
					t.Fatalf("cancel #%d returned payment %+v, want one: %v", i+1, p, tt.wantPayment)
				}
				if p != nil && (p.Status != tt.wantStatus || p.RefundedUnits != tt.wantRefunded) {
					t.Fatalf("cancel #%d = %s refunded %d, want %s refunded %d", i+1, p.Status, p.RefundedUnits, tt.wantStatus, tt.wantRefunded)
				}
			}
			var kinds []EventKind
			for _, e := range repo.recorded()[eventsBefore:] {
				kinds = append(kinds, e.Kind)
				if e.Kind == EventRefunded && (e.Payment.Status != StatusRefunded || e.Amount.Units != 1000-refundedBefore(tt.name)) {
					t.Errorf("refund event %+v", e)
				}
			}
			if len(kinds) != len(tt.wantEvents) || (len(kinds) > 0 && kinds[0] != tt.wantEvents[0]) {
				t.Errorf("events %v, want %v", kinds, tt.wantEvents)
			}
			// A charge with the key afterwards: the first outcome for a
			// charged key, refused for a cancelled one; never a new charge.
			_, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: key})
			if tt.wantPayment && tt.wantStatus == StatusDeclined {
				_, err = svc.Charge(t.Context(), ChargeRequest{Amount: usd(1000), Token: "tok_decline", IdempotencyKey: key})
			}
			switch want := tt.wantChargeErr.(type) {
			case nil:
				if err != nil {
					t.Errorf("charge after cancel: %v, want the refunded payment", err)
				}
			case *DeclinedError:
				if !errors.As(err, &want) {
					t.Errorf("charge after cancel: %v, want the decline", err)
				}
			default:
				if !errors.Is(err, want) {
					t.Errorf("charge after cancel: %v, want %v", err, want)
				}
			}
			if prov.calls != callsBefore {
				t.Errorf("provider called %d more times after the cancel", prov.calls-callsBefore)
			}
			if want := voidsWanted(tt.voids, 3); len(prov.voids()) != want {
				t.Errorf("after the charge, the provider voided %v, want the key %d times", prov.voids(), want)
			}
		})
	}
	if _, err := NewService(newMemRepo(), tokenProvider{}).CancelCharge(t.Context(), ""); err == nil {
		t.Error("cancel with an empty key: no error")
	}
}

// voidsWanted is n when the key is voided, and none otherwise.
func voidsWanted(voids bool, n int) int {
	if voids {
		return n
	}
	return 0
}

// refundedBefore is what the "before" step of a cancel test refunded.
func refundedBefore(name string) int64 {
	if name == "partly refunded: the rest is refunded" {
		return 300
	}
	return 0
}

// charge returns a before step charging 1000 USD with key and token, then
// refunding refund units of it.
func charge(key, token string, refund int64) func(t *testing.T, svc *Service) string {
	return func(t *testing.T, svc *Service) string {
		p, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(1000), Token: token, IdempotencyKey: key})
		var de *DeclinedError
		if err != nil && !errors.As(err, &de) {
			t.Fatal(err)
		}
		if refund > 0 {
			if _, err := svc.Refund(t.Context(), RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", refund}}); err != nil {
				t.Fatal(err)
			}
		}
		return key
	}
}

// TestServiceCancelChargeRacesCharge: a charge committing between the
// cancel's lookup and its tombstone is refunded instead.
func TestServiceCancelChargeRacesCharge(t *testing.T) {
	repo := newMemRepo()
	svc := NewService(repo, tokenProvider{})
	req := ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k1"}
	// The cancel's first lookup misses the winner; its CancelUncharged
	// then finds it and answers ErrDuplicate.
	repo.payments["winner"] = Payment{ID: "winner", Amount: req.Amount, Status: StatusCaptured, IdempotencyKey: "k1", Fingerprint: req.fingerprint()}
	repo.missOnce = true
	p, err := svc.CancelCharge(t.Context(), "k1")
	if err != nil || p == nil || p.ID != "winner" || p.Status != StatusRefunded {
		t.Fatalf("CancelCharge = %+v, %v; want the winner refunded", p, err)
	}
	if repo.cancelled["k1"] {
		t.Fatal("a charged key was also cancelled")
	}
}

// TestServiceCancelChargeVoidsUnrecordedCapture: money the provider
// captured whose payment could not be recorded (the store down when the
// provider answered) is voided at the provider when the key is cancelled;
// the cancel found no payment and had refunded nothing before. A void
// that fails temporarily fails the cancel, and its repeat voids.
func TestServiceCancelChargeVoidsUnrecordedCapture(t *testing.T) {
	lost := errors.New("connection refused")
	for _, voidFails := range []bool{false, true} {
		t.Run(map[bool]string{false: "void answers", true: "void fails once"}[voidFails], func(t *testing.T) {
			repo := newMemRepo()
			for range conflictRetries {
				repo.createErrs = append(repo.createErrs, lost)
			}
			prov := &countingProvider{next: tokenProvider{}}
			svc := NewService(repo, prov)
			if _, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k"}); !errors.Is(err, ErrNotRecorded) {
				t.Fatalf("charge = %v, want ErrNotRecorded", err)
			}
			if voidFails {
				prov.voidErrs = []error{ErrProviderUnavailable}
				if _, err := svc.CancelCharge(t.Context(), "k"); !errors.Is(err, ErrProviderUnavailable) {
					t.Fatalf("cancel with the void failing = %v, want ErrProviderUnavailable", err)
				}
			}
			if p, err := svc.CancelCharge(t.Context(), "k"); p != nil || err != nil {
				t.Fatalf("cancel = %+v, %v; want no payment, no error", p, err)
			}
			if v := prov.voids(); len(v) != 1 || v[0] != "k" {
				t.Errorf("voided %v, want [k]", v)
			}
		})
	}
}

// TestServiceChargeCancelledMidway: a cancel committing while the
// provider takes the charge wins (the payment is not recorded), and what
// the provider captured is voided before the charge answers
// ErrChargeCancelled, the void tried again when it fails: the cancel's
// own void may have come before the capture, and its caller, a saga
// compensating, does not send the charge again. Failing voidAttempts
// times, the charge answers ErrNotVoided, and its repeat voids.
func TestServiceChargeCancelledMidway(t *testing.T) {
	tests := []struct {
		name      string
		voidFails int
		wantErr   error
	}{
		{name: "void answers", wantErr: ErrChargeCancelled},
		{name: "void fails, then answers", voidFails: voidAttempts - 1, wantErr: ErrChargeCancelled},
		{name: "void keeps failing", voidFails: voidAttempts, wantErr: ErrNotVoided},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := newMemRepo()
			prov := &countingProvider{next: tokenProvider{}}
			prov.onCharge = func() {
				repo.mu.Lock()
				repo.cancelled["k"] = true
				repo.mu.Unlock()
			}
			for range tt.voidFails {
				prov.voidErrs = append(prov.voidErrs, ErrProviderUnavailable)
			}
			svc := NewService(repo, prov)
			req := ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k"}
			_, err := svc.Charge(t.Context(), req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("charge = %v, want %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrNotVoided) {
				if errors.Is(err, ErrChargeCancelled) || errors.Is(err, ErrProviderUnavailable) {
					t.Errorf("charge = %v: ErrNotVoided alone, which the service logs, wanted", err)
				}
				if v := prov.voids(); len(v) != 0 {
					t.Fatalf("voided %v, with every void failing", v)
				}
				if _, err := svc.Charge(t.Context(), req); !errors.Is(err, ErrChargeCancelled) {
					t.Fatalf("the charge again = %v, want ErrChargeCancelled", err)
				}
			}
			if v := prov.voids(); len(v) != 1 || v[0] != "k" {
				t.Errorf("voided %v, want [k]", v)
			}
			if repo.count() != 0 {
				t.Errorf("%d payments recorded for a cancelled key", repo.count())
			}
		})
	}
}

func TestServiceEvents(t *testing.T) {
	repo := newMemRepo()
	svc := NewService(repo, tokenProvider{})
	ctx := t.Context()
	p, err := svc.Charge(ctx, ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "a", UserID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	// A repeat records nothing new.
	if _, err := svc.Charge(ctx, ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "a", UserID: "u1"}); err != nil {
		t.Fatal(err)
	}
	_, _ = svc.Charge(ctx, ChargeRequest{Amount: usd(5), Token: "tok_decline", IdempotencyKey: "d", UserID: "u1"})
	_, _ = svc.Charge(ctx, ChargeRequest{Amount: usd(5), Token: "tok_unavailable", IdempotencyKey: "u"})
	if _, err := svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 250}}); err != nil {
		t.Fatal(err)
	}
	_, _ = svc.Refund(ctx, RefundRequest{PaymentID: p.ID, Amount: &Money{"USD", 5000}}) // refused: no event
	want := []struct {
		kind   EventKind
		status Status
		amount int64
	}{
		{EventCaptured, StatusCaptured, 0},
		{EventDeclined, StatusDeclined, 0},
		{EventRefunded, StatusPartiallyRefunded, 250},
	}
	got := repo.recorded()
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %d", got, len(want))
	}
	for i, w := range want {
		if got[i].Kind != w.kind || got[i].Payment.Status != w.status || got[i].Amount.Units != w.amount || got[i].Payment.UserID != "u1" {
			t.Errorf("event %d = %+v, want %s %s %d for u1", i, got[i], w.kind, w.status, w.amount)
		}
	}
}

func TestChargeFingerprintUserID(t *testing.T) {
	base := ChargeRequest{Amount: usd(1), Token: "tok_approve", IdempotencyKey: "k", Reference: "r"}
	withUser := base
	withUser.UserID = "u1"
	otherUser := base
	otherUser.UserID = "u2"
	if base.fingerprint() == withUser.fingerprint() || withUser.fingerprint() == otherUser.fingerprint() {
		t.Error("the user is not part of the request's fingerprint")
	}
	// Without a user the fingerprint is what it was before payments had
	// users, so keys recorded then still replay.
	old := sha256.Sum256([]byte("3:USD;1:1;11:tok_approve;1:r;"))
	if base.fingerprint() != hex.EncodeToString(old[:]) {
		t.Error("the fingerprint of a request without a user changed")
	}
}
