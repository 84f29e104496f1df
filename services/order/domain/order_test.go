package domain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

const alice = "11111111-1111-4111-8111-111111111111"

func item(sku string, qty int32, currency string, units int64) LineItem {
	return LineItem{SKU: sku, Quantity: qty, UnitPrice: Money{Currency: currency, Units: units}}
}

func request(items ...LineItem) CreateRequest {
	return CreateRequest{UserID: alice, Items: items, PaymentToken: "tok_approve", IdempotencyKey: "key-1"}
}

func TestCreateRequestTotal(t *testing.T) {
	tests := []struct {
		name       string
		req        CreateRequest
		want       Money
		wantField  string
		wantReason string
	}{
		{name: "one item", req: request(item("A", 3, "USD", 250)), want: Money{"USD", 750}},
		{name: "several items", req: request(item("A", 2, "EUR", 100), item("B", 1, "EUR", 5), item("C", 10, "EUR", 0)), want: Money{"EUR", 205}},
		{name: "at the maximum", req: request(item("A", 1, "USD", MaxUnits)), want: Money{"USD", MaxUnits}},
		{name: "no items", req: request(), wantField: "items"},
		{name: "mixed currencies", req: request(item("A", 1, "USD", 1), item("B", 1, "USD", 1), item("C", 1, "EUR", 1)),
			wantField: "items[2].unit_price.currency_code", wantReason: ReasonCurrencyMismatch},
		{name: "bad currency", req: request(item("A", 1, "usd", 1)), wantField: "items[0].unit_price.currency_code"},
		{name: "negative price", req: request(item("A", 1, "USD", 5), item("B", 1, "USD", -1)), wantField: "items[1].unit_price.units"},
		{name: "zero quantity", req: request(item("A", 0, "USD", 5)), wantField: "items[0].quantity"},
		{name: "empty sku", req: request(item("", 1, "USD", 5)), wantField: "items[0].sku"},
		{name: "free order", req: request(item("A", 3, "USD", 0)), wantField: "items"},
		{name: "above the maximum", req: request(item("A", 2, "USD", MaxUnits/2+1)), wantField: "items"},
		{name: "line overflows int64", req: request(item("A", 10000, "USD", math.MaxInt64/2)), wantField: "items"},
		{name: "sum overflows int64", req: request(item("A", 1, "USD", math.MaxInt64), item("B", 1, "USD", math.MaxInt64)), wantField: "items"},
		{name: "no user", req: CreateRequest{Items: []LineItem{item("A", 1, "USD", 1)}, PaymentToken: "t", IdempotencyKey: "k"}, wantField: "user_id"},
		{name: "no token", req: CreateRequest{UserID: alice, Items: []LineItem{item("A", 1, "USD", 1)}, IdempotencyKey: "k"}, wantField: "payment_token"},
		{name: "no key", req: CreateRequest{UserID: alice, Items: []LineItem{item("A", 1, "USD", 1)}, PaymentToken: "t"}, wantField: "idempotency_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.req.Total()
			if tt.wantField == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Total() = %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField || fe.Reason != tt.wantReason {
				t.Fatalf("Total() error = %v; want field %s reason %q", err, tt.wantField, tt.wantReason)
			}
		})
	}
}

func TestCreateRequestFingerprint(t *testing.T) {
	base := request(item("A", 1, "USD", 100), item("B", 2, "USD", 50))
	tests := []struct {
		name   string
		change func(*CreateRequest)
		same   bool
	}{
		{"identical", func(*CreateRequest) {}, true},
		{"other key only", func(r *CreateRequest) { r.IdempotencyKey = "key-2" }, true},
		{"other user", func(r *CreateRequest) { r.UserID = "22222222-2222-4222-8222-222222222222" }, false},
		{"other token", func(r *CreateRequest) { r.PaymentToken = "tok_decline" }, false},
		{"other quantity", func(r *CreateRequest) { r.Items[1].Quantity = 3 }, false},
		{"other price", func(r *CreateRequest) { r.Items[0].UnitPrice.Units = 101 }, false},
		{"other sku", func(r *CreateRequest) { r.Items[0].SKU = "Z" }, false},
		{"items swapped", func(r *CreateRequest) { r.Items[0], r.Items[1] = r.Items[1], r.Items[0] }, false},
		{"item dropped", func(r *CreateRequest) { r.Items = r.Items[:1] }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			r.Items = append([]LineItem(nil), base.Items...)
			tt.change(&r)
			if got := r.Fingerprint() == base.Fingerprint(); got != tt.same {
				t.Fatalf("same fingerprint = %v, want %v", got, tt.same)
			}
		})
	}
}

func TestOrderTransitions(t *testing.T) {
	now := time.Unix(1800000000, 0).UTC()
	tests := []struct {
		name       string
		from       Status
		declined   bool
		wantErr    error
		wantStatus Status
	}{
		{"pending to paid", StatusPending, false, nil, StatusPaid},
		{"pending to failed", StatusPending, true, nil, StatusPaymentFailed},
		{"paid to failed", StatusPaid, true, ErrInvalidTransition, StatusPaid},
		{"paid to paid", StatusPaid, false, ErrInvalidTransition, StatusPaid},
		{"failed to paid", StatusPaymentFailed, false, ErrInvalidTransition, StatusPaymentFailed},
		{"failed to failed", StatusPaymentFailed, true, ErrInvalidTransition, StatusPaymentFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Order{ID: "o", Status: tt.from}
			var err error
			if tt.declined {
				err = o.MarkPaymentFailed("pay", "PAYMENT_DECLINED", now)
			} else {
				err = o.MarkPaid("pay", now)
			}
			if !errors.Is(err, tt.wantErr) || o.Status != tt.wantStatus {
				t.Fatalf("got %v, status %s; want %v, %s", err, o.Status, tt.wantErr, tt.wantStatus)
			}
			if err == nil {
				wantReason := ""
				if tt.declined {
					wantReason = "PAYMENT_DECLINED"
				}
				if o.PaymentID != "pay" || o.FailureReason != wantReason || !o.UpdateTime.Equal(now) {
					t.Fatalf("order after transition: %+v", o)
				}
			}
		})
	}
}

// fixture is a Service over in-memory fakes.
type fixture struct {
	svc      *Service
	repo     *memRepo
	users    *fakeUsers
	payments *fakePayments
}

func newFixture() *fixture {
	f := &fixture{
		repo:     newMemRepo(),
		users:    &fakeUsers{known: map[string]bool{alice: true}},
		payments: &fakePayments{},
	}
	f.svc = NewService(f.repo, f.users, f.payments)
	return f
}

func TestServiceCreate(t *testing.T) {
	tests := []struct {
		name        string
		token       string
		userID      string
		usersErr    error
		paymentDown bool
		wantStatus  Status
		wantReason  string
		wantErr     error
		wantField   string
		wantOrders  int
	}{
		{name: "approved", token: "tok_approve", wantStatus: StatusPaid, wantOrders: 1},
		{name: "declined", token: "tok_decline", wantStatus: StatusPaymentFailed, wantReason: "PAYMENT_DECLINED", wantOrders: 1},
		{name: "insufficient funds", token: "tok_insufficient", wantStatus: StatusPaymentFailed, wantReason: "INSUFFICIENT_FUNDS", wantOrders: 1},
		{name: "payment down leaves it pending", token: "tok_approve", paymentDown: true, wantErr: ErrPaymentUnavailable, wantOrders: 1},
		{name: "unknown user stores nothing", token: "tok_approve", userID: "22222222-2222-4222-8222-222222222222", wantErr: ErrUserNotFound},
		{name: "users down stores nothing", token: "tok_approve", usersErr: &RetryableError{Err: ErrUsersUnavailable}, wantErr: ErrUsersUnavailable},
		{name: "bad token stores nothing", token: "tok_nope", wantField: "payment_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			f.users.err = tt.usersErr
			f.payments.setDown(tt.paymentDown)
			req := request(item("A", 2, "USD", 300), item("B", 1, "USD", 400))
			req.PaymentToken = tt.token
			if tt.userID != "" {
				req.UserID = tt.userID
			}
			o, err := f.svc.Create(t.Context(), req)
			switch {
			case tt.wantField != "":
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("Create() error = %v, want FieldError on %s", err, tt.wantField)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Create() error = %v, want %v", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("Create(): %v", err)
				}
				if o.Status != tt.wantStatus || o.FailureReason != tt.wantReason || o.Total != (Money{"USD", 1000}) ||
					o.PaymentID != "pay-"+PaymentKey(o.ID) || len(o.Items) != 2 {
					t.Fatalf("Create() = %+v", o)
				}
				c := f.payments.requests[0]
				if c.IdempotencyKey != "order-"+o.ID || c.Reference != o.ID || c.Amount != o.Total || c.Token != tt.token {
					t.Fatalf("charged %+v for order %s", c, o.ID)
				}
			}
			if n := f.repo.count(); n != tt.wantOrders {
				t.Fatalf("%d orders stored, want %d", n, tt.wantOrders)
			}
			if tt.paymentDown {
				stored, _ := f.repo.ByIdempotencyKey(t.Context(), req.IdempotencyKey)
				if stored.Status != StatusPending {
					t.Fatalf("order after a failed charge is %s, want PENDING", stored.Status)
				}
				var re *RetryableError
				if !errors.As(err, &re) || re.RetryAfter != 2*time.Second {
					t.Fatalf("error %v does not carry the payment service's retry delay", err)
				}
			}
		})
	}
}

func TestServiceCreateIdempotency(t *testing.T) {
	t.Run("repeat returns the same order and charges once", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1, "USD", 100))
		o1, err1 := f.svc.Create(t.Context(), req)
		o2, err2 := f.svc.Create(t.Context(), req)
		if err1 != nil || err2 != nil || o1.ID != o2.ID || o2.Status != StatusPaid {
			t.Fatalf("got %+v, %v and %+v, %v", o1, err1, o2, err2)
		}
		if len(f.payments.requests) != 1 || f.repo.count() != 1 {
			t.Fatalf("%d charges, %d orders; want 1 and 1", len(f.payments.requests), f.repo.count())
		}
	})
	t.Run("different request under the key", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1, "USD", 100))
		if _, err := f.svc.Create(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		req.Items[0].Quantity = 2
		if _, err := f.svc.Create(t.Context(), req); !errors.Is(err, ErrIdempotencyKeyReused) {
			t.Fatalf("Create() = %v, want ErrIdempotencyKeyReused", err)
		}
	})
	t.Run("retry completes a pending order", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1, "USD", 100))
		f.payments.setDown(true)
		if _, err := f.svc.Create(t.Context(), req); !errors.Is(err, ErrPaymentUnavailable) {
			t.Fatalf("first attempt: %v", err)
		}
		pending, _ := f.repo.ByIdempotencyKey(t.Context(), req.IdempotencyKey)
		f.payments.setDown(false)
		// A deleted user after the order was stored does not matter: the
		// check was made when the order was placed.
		f.users.known = nil
		o, err := f.svc.Create(t.Context(), req)
		if err != nil || o.ID != pending.ID || o.Status != StatusPaid {
			t.Fatalf("retry = %+v, %v; want order %s PAID", o, err, pending.ID)
		}
		if f.repo.count() != 1 || f.payments.paymentCount() != 1 {
			t.Fatalf("%d orders, %d payments; want 1 and 1", f.repo.count(), f.payments.paymentCount())
		}
		// Both attempts used the same payment key.
		for _, c := range f.payments.requests {
			if c.IdempotencyKey != PaymentKey(pending.ID) {
				t.Fatalf("charge key %s, want %s", c.IdempotencyKey, PaymentKey(pending.ID))
			}
		}
	})
	t.Run("losing the insert race resumes the winner", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1, "USD", 100))
		f.repo.raceWinner = &Order{ID: "winner", UserID: alice, Total: Money{"USD", 100}, Status: StatusPending,
			IdempotencyKey: req.IdempotencyKey, Fingerprint: req.Fingerprint()}
		o, err := f.svc.Create(t.Context(), req)
		if err != nil || o.ID != "winner" || o.Status != StatusPaid {
			t.Fatalf("Create() = %+v, %v; want the winner, PAID", o, err)
		}
		if f.repo.count() != 1 {
			t.Fatalf("%d orders stored, want 1", f.repo.count())
		}
	})
	t.Run("settled concurrently keeps its outcome", func(t *testing.T) {
		f := newFixture()
		req := request(item("A", 1, "USD", 100))
		o, err := f.svc.Create(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		// Simulate a second attempt that read the order while PENDING.
		pending := *o
		pending.Status = StatusPending
		got, err := f.svc.pay(t.Context(), &pending, req.PaymentToken)
		if err != nil || got.Status != StatusPaid || got.UpdateTime != o.UpdateTime {
			t.Fatalf("pay() on a settled order = %+v, %v", got, err)
		}
	})
}

func TestServicePassesContext(t *testing.T) {
	f := newFixture()
	ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), ctxKey{}, "caller"), time.Minute)
	defer cancel()
	if _, err := f.svc.Create(ctx, request(item("A", 1, "USD", 100))); err != nil {
		t.Fatal(err)
	}
	if f.users.sawValue != "caller" || f.payments.sawValue != "caller" || !f.payments.deadline {
		t.Fatalf("ports saw %v / %v (deadline %v); want the caller's context", f.users.sawValue, f.payments.sawValue, f.payments.deadline)
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
		req := request(item("A", 1, "USD", 100))
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
			if pages != tt.wantPages || len(got) != len(want) {
				t.Fatalf("%d pages, %d orders; want %d pages, %d orders", pages, len(got), tt.wantPages, len(want))
			}
			seen := map[string]bool{}
			for _, id := range got {
				if seen[id] {
					t.Fatalf("order %s listed twice", id)
				}
				seen[id] = true
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
