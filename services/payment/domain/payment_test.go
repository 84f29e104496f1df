package domain

import (
	"context"
	"errors"
	"testing"
	"time"
)

func usd(units int64) Money { return Money{Currency: "USD", Units: units} }

func TestChargeRequestValidate(t *testing.T) {
	ok := ChargeRequest{Amount: usd(100), Token: "tok_approve", IdempotencyKey: "k"}
	tests := []struct {
		name      string
		change    func(*ChargeRequest)
		wantField string
	}{
		{"valid", func(*ChargeRequest) {}, ""},
		{"zero amount", func(r *ChargeRequest) { r.Amount.Units = 0 }, "amount.units"},
		{"negative amount", func(r *ChargeRequest) { r.Amount.Units = -1 }, "amount.units"},
		{"amount above the maximum", func(r *ChargeRequest) { r.Amount.Units = MaxUnits + 1 }, "amount.units"},
		{"amount at the maximum", func(r *ChargeRequest) { r.Amount.Units = MaxUnits }, ""},
		{"missing currency", func(r *ChargeRequest) { r.Amount.Currency = "" }, "amount.currency_code"},
		{"lower-case currency", func(r *ChargeRequest) { r.Amount.Currency = "usd" }, "amount.currency_code"},
		{"unknown currency", func(r *ChargeRequest) { r.Amount.Currency = "XYZ" }, "amount.currency_code"},
		{"empty token", func(r *ChargeRequest) { r.Token = "" }, "payment_method_token"},
		{"empty key", func(r *ChargeRequest) { r.IdempotencyKey = "" }, "idempotency_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.change(&r)
			err := r.validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Fatalf("validate() = %v, want FieldError on %s", err, tt.wantField)
			}
		})
	}
}

func TestChargeRequestFingerprint(t *testing.T) {
	base := ChargeRequest{Amount: usd(100), Token: "tok_approve", IdempotencyKey: "k", Reference: "ref"}
	tests := []struct {
		name   string
		change func(*ChargeRequest)
		same   bool
	}{
		{"identical", func(*ChargeRequest) {}, true},
		{"other key only", func(r *ChargeRequest) { r.IdempotencyKey = "other" }, true},
		{"other amount", func(r *ChargeRequest) { r.Amount.Units = 101 }, false},
		{"other currency", func(r *ChargeRequest) { r.Amount.Currency = "EUR" }, false},
		{"other token", func(r *ChargeRequest) { r.Token = "tok_decline" }, false},
		{"other reference", func(r *ChargeRequest) { r.Reference = "ref2" }, false},
		// Without length prefixes these two would concatenate alike.
		{"shifted boundary", func(r *ChargeRequest) { r.Token, r.Reference = "tok_approver", "ef" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			tt.change(&r)
			if got := r.fingerprint() == base.fingerprint(); got != tt.same {
				t.Fatalf("same fingerprint = %v, want %v", got, tt.same)
			}
		})
	}
}

func TestPaymentApplyRefund(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	captured := Payment{ID: "p", Amount: usd(1000), Status: StatusCaptured}
	tests := []struct {
		name         string
		payment      Payment
		amount       *Money
		wantErr      error
		wantField    string
		wantUnits    int64
		wantRefunded int64
		wantStatus   Status
	}{
		{name: "all when unset", payment: captured, wantUnits: 1000, wantRefunded: 1000, wantStatus: StatusRefunded},
		{name: "part", payment: captured, amount: &Money{"USD", 300}, wantUnits: 300, wantRefunded: 300, wantStatus: StatusPartiallyRefunded},
		{name: "exactly the rest", payment: Payment{ID: "p", Amount: usd(1000), RefundedUnits: 700, Status: StatusPartiallyRefunded},
			amount: &Money{"USD", 300}, wantUnits: 300, wantRefunded: 1000, wantStatus: StatusRefunded},
		{name: "the rest when unset", payment: Payment{ID: "p", Amount: usd(1000), RefundedUnits: 700, Status: StatusPartiallyRefunded},
			wantUnits: 300, wantRefunded: 1000, wantStatus: StatusRefunded},
		{name: "more than charged", payment: captured, amount: &Money{"USD", 1001}, wantErr: ErrRefundExceedsCharge},
		{name: "more than left", payment: Payment{ID: "p", Amount: usd(1000), RefundedUnits: 700, Status: StatusPartiallyRefunded},
			amount: &Money{"USD", 301}, wantErr: ErrRefundExceedsCharge},
		{name: "fully refunded, again", payment: Payment{ID: "p", Amount: usd(1000), RefundedUnits: 1000, Status: StatusRefunded},
			wantErr: ErrRefundExceedsCharge},
		{name: "other currency", payment: captured, amount: &Money{"EUR", 100}, wantField: "amount.currency_code"},
		{name: "declined", payment: Payment{ID: "p", Amount: usd(1000), Status: StatusDeclined, DeclineReason: ReasonDeclined},
			wantErr: ErrNotRefundable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.payment
			units, err := p.applyRefund(tt.amount, now)
			if tt.wantField != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField || fe.Reason != ReasonCurrencyMismatch {
					t.Fatalf("applyRefund() = %v, want CURRENCY_MISMATCH on %s", err, tt.wantField)
				}
				if p != tt.payment {
					t.Fatalf("payment changed on error: %+v", p)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("applyRefund() = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if p != tt.payment {
					t.Fatalf("payment changed on error: %+v", p)
				}
				return
			}
			if units != tt.wantUnits || p.RefundedUnits != tt.wantRefunded || p.Status != tt.wantStatus || !p.UpdateTime.Equal(now) ||
				p.PendingRefundUnits != tt.payment.PendingRefundUnits+units {
				t.Fatalf("got units %d, payment %+v; want units %d, refunded %d, status %s",
					units, p, tt.wantUnits, tt.wantRefunded, tt.wantStatus)
			}
		})
	}
}

// TestServiceChargeLowersUserID: a UUID user id is kept lowered, as every
// other service keeps them; one that is not a UUID is kept as sent.
func TestServiceChargeLowersUserID(t *testing.T) {
	svc := NewService(newMemRepo(), tokenProvider{})
	for key, tt := range map[string]struct{ in, want string }{
		"k1": {"0E4B2A7C-9D3F-4C1A-8B6E-5F2D1C0A9B8E", "0e4b2a7c-9d3f-4c1a-8b6e-5f2d1c0a9b8e"},
		"k2": {"Customer-42", "Customer-42"},
	} {
		p, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: key, UserID: tt.in})
		if err != nil || p.UserID != tt.want {
			t.Errorf("Charge(user %s) = %+v, %v; want user %s", tt.in, p, err, tt.want)
		}
	}
}

func TestServiceCharge(t *testing.T) {
	tests := []struct {
		name         string
		token        string
		wantStatus   Status
		wantDeclined string
		wantErr      error
		wantField    string
		wantStored   int
	}{
		{name: "approve", token: "tok_approve", wantStatus: StatusCaptured, wantStored: 1},
		{name: "decline", token: "tok_decline", wantDeclined: ReasonDeclined, wantStored: 1},
		{name: "insufficient funds", token: "tok_insufficient", wantDeclined: ReasonInsufficientFunds, wantStored: 1},
		{name: "unavailable records nothing", token: "tok_unavailable", wantErr: ErrProviderUnavailable},
		{name: "unknown token", token: "tok_nope", wantField: "payment_method_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := newMemRepo()
			svc := NewService(repo, tokenProvider{})
			p, err := svc.Charge(t.Context(), ChargeRequest{Amount: usd(500), Token: tt.token, IdempotencyKey: "k1", Reference: "order-1"})
			switch {
			case tt.wantStatus != "":
				if err != nil || p.Status != tt.wantStatus || p.Amount != usd(500) || p.Reference != "order-1" {
					t.Fatalf("Charge() = %+v, %v", p, err)
				}
			case tt.wantDeclined != "":
				var de *DeclinedError
				if !errors.As(err, &de) || de.Reason != tt.wantDeclined || de.PaymentID == "" {
					t.Fatalf("Charge() error = %v, want DeclinedError %s", err, tt.wantDeclined)
				}
				stored, err := svc.Payment(t.Context(), de.PaymentID)
				if err != nil || stored.Status != StatusDeclined || stored.DeclineReason != tt.wantDeclined {
					t.Fatalf("declined payment stored as %+v, %v", stored, err)
				}
			case tt.wantField != "":
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("Charge() error = %v, want FieldError on %s", err, tt.wantField)
				}
			default:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Charge() error = %v, want %v", err, tt.wantErr)
				}
			}
			if n := repo.count(); n != tt.wantStored {
				t.Fatalf("%d payments stored, want %d", n, tt.wantStored)
			}
		})
	}
}

func TestServiceChargeIdempotency(t *testing.T) {
	first := ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k1", Reference: "r"}
	tests := []struct {
		name    string
		first   ChargeRequest
		repeat  func(ChargeRequest) ChargeRequest
		wantErr error
	}{
		{"same request", first, func(r ChargeRequest) ChargeRequest { return r }, nil},
		{"other amount", first, func(r ChargeRequest) ChargeRequest { r.Amount.Units++; return r }, ErrIdempotencyKeyReused},
		{"other token", first, func(r ChargeRequest) ChargeRequest { r.Token = "tok_decline"; return r }, ErrIdempotencyKeyReused},
		{"other reference", first, func(r ChargeRequest) ChargeRequest { r.Reference = "x"; return r }, ErrIdempotencyKeyReused},
		// A different request is rejected before its token is looked at.
		{"unknown token", first, func(r ChargeRequest) ChargeRequest { r.Token = "tok_nope"; return r }, ErrIdempotencyKeyReused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prov := &countingProvider{next: tokenProvider{}}
			repo := newMemRepo()
			svc := NewService(repo, prov)
			p1, err := svc.Charge(t.Context(), tt.first)
			if err != nil {
				t.Fatal(err)
			}
			p2, err := svc.Charge(t.Context(), tt.repeat(tt.first))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("repeat error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (p2.ID != p1.ID || !p2.CreateTime.Equal(p1.CreateTime)) {
				t.Fatalf("repeat returned %+v, want the first payment %+v", p2, p1)
			}
			if prov.calls != 1 || repo.count() != 1 {
				t.Fatalf("provider charged %d times, %d payments stored; want 1 and 1", prov.calls, repo.count())
			}
		})
	}
}

func TestServiceChargeRepeatsDecline(t *testing.T) {
	prov := &countingProvider{next: tokenProvider{}}
	svc := NewService(newMemRepo(), prov)
	req := ChargeRequest{Amount: usd(500), Token: "tok_decline", IdempotencyKey: "k1"}
	_, err1 := svc.Charge(t.Context(), req)
	_, err2 := svc.Charge(t.Context(), req)
	var d1, d2 *DeclinedError
	if !errors.As(err1, &d1) || !errors.As(err2, &d2) || *d1 != *d2 {
		t.Fatalf("errors %v and %v, want the same DeclinedError twice", err1, err2)
	}
	if prov.calls != 1 {
		t.Fatalf("provider called %d times, want 1", prov.calls)
	}
}

func TestServiceChargeLosesRace(t *testing.T) {
	repo := newMemRepo()
	svc := NewService(repo, tokenProvider{})
	req := ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k1"}
	winner := &Payment{ID: "winner", Amount: req.Amount, Status: StatusCaptured, IdempotencyKey: "k1", Fingerprint: req.fingerprint()}
	repo.raceWinner = winner
	p, err := svc.Charge(t.Context(), req)
	if err != nil || p.ID != "winner" {
		t.Fatalf("Charge() = %+v, %v; want the winner's payment", p, err)
	}
	if repo.count() != 1 {
		t.Fatalf("%d payments stored, want 1", repo.count())
	}
}

func TestServiceRefund(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name        string
		steps       []RefundRequest // PaymentID is filled in
		wantErr     error
		wantUnits   int64
		wantRefunds int
	}{
		{name: "all", steps: []RefundRequest{{}}, wantUnits: 1000, wantRefunds: 1},
		{name: "two parts", steps: []RefundRequest{{Amount: &Money{"USD", 400}}, {Amount: &Money{"USD", 600}}}, wantUnits: 1000, wantRefunds: 2},
		{name: "keyed repeat refunds once", steps: []RefundRequest{
			{Amount: &Money{"USD", 400}, IdempotencyKey: "r1"}, {Amount: &Money{"USD", 400}, IdempotencyKey: "r1"}}, wantUnits: 400, wantRefunds: 1},
		{name: "keyed repeat of all refunds once", steps: []RefundRequest{
			{Amount: &Money{"USD", 400}}, {IdempotencyKey: "r1"}, {IdempotencyKey: "r1"}}, wantUnits: 1000, wantRefunds: 2},
		{name: "key reused with other amount", steps: []RefundRequest{
			{Amount: &Money{"USD", 400}, IdempotencyKey: "r1"}, {Amount: &Money{"USD", 500}, IdempotencyKey: "r1"}},
			wantErr: ErrIdempotencyKeyReused, wantUnits: 400, wantRefunds: 1},
		{name: "key reused with other currency", steps: []RefundRequest{
			{Amount: &Money{"USD", 400}, IdempotencyKey: "r1"}, {Amount: &Money{"EUR", 400}, IdempotencyKey: "r1"}},
			wantErr: ErrIdempotencyKeyReused, wantUnits: 400, wantRefunds: 1},
		{name: "unkeyed repeat refunds twice", steps: []RefundRequest{{Amount: &Money{"USD", 400}}, {Amount: &Money{"USD", 400}}}, wantUnits: 800, wantRefunds: 2},
		{name: "over the charge", steps: []RefundRequest{{Amount: &Money{"USD", 600}}, {Amount: &Money{"USD", 600}}},
			wantErr: ErrRefundExceedsCharge, wantUnits: 600, wantRefunds: 1},
		{name: "refunded again", steps: []RefundRequest{{}, {}}, wantErr: ErrRefundExceedsCharge, wantUnits: 1000, wantRefunds: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := newMemRepo()
			svc := NewService(repo, tokenProvider{})
			p, err := svc.Charge(ctx, ChargeRequest{Amount: usd(1000), Token: "tok_approve", IdempotencyKey: "c"})
			if err != nil {
				t.Fatal(err)
			}
			for i, step := range tt.steps {
				step.PaymentID = p.ID
				_, err = svc.Refund(ctx, step)
				if i < len(tt.steps)-1 && err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("last refund error = %v, want %v", err, tt.wantErr)
			}
			got, _ := svc.Payment(ctx, p.ID)
			if got.RefundedUnits != tt.wantUnits || len(repo.refunds) != tt.wantRefunds {
				t.Fatalf("refunded %d in %d refunds, want %d in %d", got.RefundedUnits, len(repo.refunds), tt.wantUnits, tt.wantRefunds)
			}
		})
	}
}

func TestServiceRefundValidates(t *testing.T) {
	svc := NewService(newMemRepo(), tokenProvider{})
	tests := []struct {
		name      string
		amount    Money
		wantField string
	}{
		{"zero", Money{"USD", 0}, "amount.units"},
		{"negative", Money{"USD", -5}, "amount.units"},
		{"bad currency", Money{"usd", 5}, "amount.currency_code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := svc.Refund(t.Context(), RefundRequest{PaymentID: "p", Amount: &tt.amount})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Fatalf("Refund() = %v, want FieldError on %s", err, tt.wantField)
			}
		})
	}
	if _, err := svc.Refund(t.Context(), RefundRequest{PaymentID: "missing"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Refund(missing) = %v, want ErrNotFound", err)
	}
}

// TestServiceChargeRecordFails: once the provider has answered, a failure
// to record the payment is tried again, and when it persists Charge says
// ErrNotRecorded (never an error that reads "nothing happened"); the same
// charge sent again is recorded, with the provider's first outcome.
func TestServiceChargeRecordFails(t *testing.T) {
	lost := errors.New("could not serialize access due to concurrent update")
	tests := []struct {
		name    string
		fails   int
		wantErr error
	}{
		{name: "once", fails: 1},
		{name: "twice", fails: conflictRetries - 1},
		{name: "every time", fails: conflictRetries, wantErr: ErrNotRecorded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := newMemRepo()
			for range tt.fails {
				repo.createErrs = append(repo.createErrs, lost)
			}
			svc := NewService(repo, tokenProvider{})
			req := ChargeRequest{Amount: usd(500), Token: "tok_approve", IdempotencyKey: "k1"}
			p, err := svc.Charge(t.Context(), req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Charge() = %+v, %v; want %v", p, err, tt.wantErr)
			}
			if tt.wantErr == nil {
				if repo.count() != 1 {
					t.Errorf("%d payments stored, want 1", repo.count())
				}
				return
			}
			if repo.count() != 0 {
				t.Errorf("%d payments stored, want 0", repo.count())
			}
			if p, err := svc.Charge(t.Context(), req); err != nil || p.Status != StatusCaptured || repo.count() != 1 {
				t.Errorf("the same charge again = %+v, %v with %d stored; want it captured and recorded", p, err, repo.count())
			}
		})
	}
}
