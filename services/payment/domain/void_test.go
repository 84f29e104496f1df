package domain

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestVoidsResumed: a void that fails, whether CancelCharge's or the one
// after a capture that lost to a cancel, leaves the key due, and
// ResumeVoids voids it once it is due, durably: before, only the caller
// sending the same request again did, and nobody did when the charger was
// gone.
func TestVoidsResumed(t *testing.T) {
	tests := []struct {
		name string
		// fail makes the key's void fail.
		fail func(t *testing.T, svc *Service, repo *memRepo, prov *countingProvider)
	}{
		{"cancel charge", func(t *testing.T, svc *Service, _ *memRepo, prov *countingProvider) {
			prov.voidErrs = []error{ErrProviderUnavailable}
			if _, err := svc.CancelCharge(t.Context(), "k"); !errors.Is(err, ErrProviderUnavailable) {
				t.Fatalf("CancelCharge with the void failing = %v", err)
			}
		}},
		{"capture after the cancel", func(t *testing.T, svc *Service, repo *memRepo, prov *countingProvider) {
			prov.onCharge = func() {
				repo.mu.Lock()
				repo.cancelled["k"] = true
				repo.mu.Unlock()
			}
			for range voidAttempts {
				prov.voidErrs = append(prov.voidErrs, ErrProviderUnavailable)
			}
			if _, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k"}); !errors.Is(err, ErrNotVoided) {
				t.Fatalf("charge = %v, want ErrNotVoided", err)
			}
		}},
		{"charge of a cancelled key", func(t *testing.T, svc *Service, repo *memRepo, prov *countingProvider) {
			repo.mu.Lock()
			repo.cancelled["k"] = true
			repo.mu.Unlock()
			prov.voidErrs = []error{ErrProviderUnavailable}
			if _, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k"}); !errors.Is(err, ErrProviderUnavailable) {
				t.Fatalf("charge = %v, want the void's error", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			repo := newMemRepo()
			prov := &countingProvider{next: tokenProvider{}}
			svc := NewService(repo, prov)
			c := newClock()
			svc.Now = c.Now
			tt.fail(t, svc, repo, prov)
			if !repo.voidPending("k") || len(prov.voids()) != 0 {
				t.Fatalf("after the failed void: pending %v, voided %v; want pending, none", repo.voidPending("k"), prov.voids())
			}
			if n, _, err := svc.ResumeVoids(ctx, 10); n != 0 || err != nil {
				t.Fatalf("ResumeVoids before due = %d, %v; want 0", n, err)
			}
			c.advance(DefaultRefundRetry)
			if n, more, err := svc.ResumeVoids(ctx, 10); n != 1 || more || err != nil {
				t.Fatalf("ResumeVoids once due = %d, %v, %v; want 1", n, more, err)
			}
			if v := prov.voids(); len(v) != 1 || v[0] != "k" || repo.voidPending("k") {
				t.Fatalf("voided %v, pending %v; want k voided once, done", v, repo.voidPending("k"))
			}
			c.advance(24 * time.Hour)
			if n, _, err := svc.ResumeVoids(ctx, 10); n != 0 || err != nil {
				t.Fatalf("ResumeVoids after = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestResumeVoidsBacksOff: a void the provider refuses again is due twice
// as long after, and one whose key was marked again while the provider
// voided it (a capture made meanwhile) stays due, not counted, until a
// void after that mark.
func TestResumeVoidsBacksOff(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	prov := &countingProvider{next: tokenProvider{}, voidErrs: []error{ErrProviderUnavailable, ErrProviderUnavailable}}
	svc := NewService(repo, prov)
	c := newClock()
	svc.Now = c.Now
	var attempts []int
	svc.VoidFailed = func(_ context.Context, v PendingVoid, _ error) { attempts = append(attempts, v.Attempts) }
	if _, err := svc.CancelCharge(ctx, "k"); !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("CancelCharge with the void failing = %v", err)
	}
	c.advance(DefaultRefundRetry)
	if n, _, err := svc.ResumeVoids(ctx, 10); n != 0 || err != nil || len(attempts) != 1 || attempts[0] != 1 {
		t.Fatalf("ResumeVoids with the provider refusing = %d, %v, attempts heard %v; want 0, attempt 1", n, err, attempts)
	}
	c.advance(2*DefaultRefundRetry - time.Second)
	if n, _, err := svc.ResumeVoids(ctx, 10); n != 0 || err != nil || len(prov.voids()) != 0 {
		t.Fatalf("ResumeVoids before twice RefundRetry = %d, %v, voided %v; want nothing asked", n, err, prov.voids())
	}
	c.advance(time.Second)
	prov.onVoid = func(key string) {
		if _, err := repo.MarkVoidDue(ctx, key, c.Now(), c.Now().Add(time.Hour)); err != nil {
			t.Error(err)
		}
	}
	if n, _, err := svc.ResumeVoids(ctx, 10); n != 0 || err != nil || !repo.voidPending("k") {
		t.Fatalf("ResumeVoids with the key marked again meanwhile = %d, %v, pending %v; want 0, still due", n, err, repo.voidPending("k"))
	}
	prov.onVoid = nil
	c.advance(time.Hour)
	if n, _, err := svc.ResumeVoids(ctx, 10); n != 1 || err != nil || repo.voidPending("k") {
		t.Fatalf("ResumeVoids after the new mark = %d, %v, pending %v; want the key voided, done", n, err, repo.voidPending("k"))
	}
}

// TestVoidRecordedAroundTheProvider: the void is recorded due before the
// provider is asked (a process stopping meanwhile leaves it to
// ResumeVoids) and done after; a mark that cannot be recorded does not
// stop the void, and when the void fails too the error says both.
func TestVoidRecordedAroundTheProvider(t *testing.T) {
	repo := newMemRepo()
	prov := &countingProvider{next: tokenProvider{}}
	prov.onVoid = func(key string) {
		if !repo.voidPending(key) {
			t.Errorf("the provider was asked to void %s before the void was recorded due", key)
		}
	}
	svc := NewService(repo, prov)
	if _, err := svc.CancelCharge(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	if v := prov.voids(); len(v) != 1 || repo.voidPending("k") {
		t.Fatalf("voided %v, pending %v; want k voided and done", v, repo.voidPending("k"))
	}

	prov.onVoid = nil
	repo.markErr = errors.New("database away")
	if _, err := svc.CancelCharge(t.Context(), "k2"); err != nil {
		t.Fatalf("CancelCharge with the mark failing = %v, want the void made all the same", err)
	}
	prov.voidErrs = []error{ErrProviderUnavailable}
	_, err := svc.CancelCharge(t.Context(), "k3")
	if !errors.Is(err, ErrProviderUnavailable) || !strings.Contains(err.Error(), "database away") {
		t.Fatalf("CancelCharge with the mark and the void failing = %v, want both said", err)
	}
}

// TestResumeVoidsSaysMore: a batch as large as its limit says there may
// be more, and the refusal of one key does not hold up the next.
func TestResumeVoidsSaysMore(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	prov := &countingProvider{next: tokenProvider{}, voidErrs: []error{ErrProviderUnavailable, ErrProviderUnavailable}}
	svc := NewService(repo, prov)
	c := newClock()
	svc.Now = c.Now
	for _, k := range []string{"a", "b"} {
		if _, err := svc.CancelCharge(ctx, k); !errors.Is(err, ErrProviderUnavailable) {
			t.Fatalf("CancelCharge(%s) = %v", k, err)
		}
	}
	c.advance(DefaultRefundRetry)
	prov.voidErrs = []error{ErrProviderUnavailable}
	if n, more, err := svc.ResumeVoids(ctx, 2); n != 1 || !more || err != nil {
		t.Fatalf("ResumeVoids(limit 2) with the first refused = %d, %v, %v; want 1, more", n, more, err)
	}
}
