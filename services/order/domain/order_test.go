package domain

import (
	"errors"
	"math"
	"testing"
)

const alice = "11111111-1111-4111-8111-111111111111"

func item(sku string, qty int32) LineItem { return LineItem{SKU: sku, Quantity: qty} }

func priced(sku string, qty int32, currency string, units int64) LineItem {
	return LineItem{SKU: sku, Quantity: qty, Expected: &Money{Currency: currency, Units: units}}
}

func request(items ...LineItem) CreateRequest {
	return CreateRequest{UserID: alice, Items: items, PaymentToken: "tok_approve", IdempotencyKey: "key-1"}
}

func TestCreateRequestValidate(t *testing.T) {
	tests := []struct {
		name       string
		req        CreateRequest
		wantField  string
		wantReason string
	}{
		{name: "one item", req: request(item("A", 3))},
		{name: "prices sent for some", req: request(priced("A", 2, "EUR", 100), item("B", 1), priced("C", 10, "EUR", 0))},
		{name: "no items", req: request(), wantField: "items"},
		{name: "mixed currencies", req: request(priced("A", 1, "USD", 1), item("B", 1), priced("C", 1, "EUR", 1)),
			wantField: "items[2].unit_price.currency_code", wantReason: ReasonCurrencyMismatch},
		{name: "bad currency", req: request(priced("A", 1, "usd", 1)), wantField: "items[0].unit_price.currency_code"},
		{name: "unknown currency", req: request(priced("A", 1, "XYZ", 1)), wantField: "items[0].unit_price.currency_code"},
		{name: "negative price", req: request(priced("A", 1, "USD", 5), priced("B", 1, "USD", -1)), wantField: "items[1].unit_price.units"},
		{name: "zero quantity", req: request(item("A", 0)), wantField: "items[0].quantity"},
		{name: "empty sku", req: request(item("", 1)), wantField: "items[0].sku"},
		{name: "sku twice", req: request(item("A", 1), item("B", 1), item("A", 2)), wantField: "items[2].sku"},
		{name: "no user", req: CreateRequest{Items: []LineItem{item("A", 1)}, PaymentToken: "t", IdempotencyKey: "k"}, wantField: "user_id"},
		{name: "no token", req: CreateRequest{UserID: alice, Items: []LineItem{item("A", 1)}, IdempotencyKey: "k"}, wantField: "payment_token"},
		{name: "no key", req: CreateRequest{UserID: alice, Items: []LineItem{item("A", 1)}, PaymentToken: "t"}, wantField: "idempotency_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField || fe.Reason != tt.wantReason {
				t.Fatalf("Validate() = %v; want field %s reason %q", err, tt.wantField, tt.wantReason)
			}
		})
	}
}

func TestCreateRequestFingerprint(t *testing.T) {
	base := request(priced("A", 1, "USD", 100), item("B", 2))
	tests := []struct {
		name   string
		change func(*CreateRequest)
		same   bool
	}{
		{"identical", func(*CreateRequest) {}, true},
		{"other key only", func(r *CreateRequest) { r.IdempotencyKey = "key-2" }, true},
		{"other request id only", func(r *CreateRequest) { r.RequestID = "req-2" }, true},
		{"other user", func(r *CreateRequest) { r.UserID = "22222222-2222-4222-8222-222222222222" }, false},
		{"other token", func(r *CreateRequest) { r.PaymentToken = "tok_decline" }, false},
		{"other quantity", func(r *CreateRequest) { r.Items[1].Quantity = 3 }, false},
		{"other price", func(r *CreateRequest) { r.Items[0].Expected = &Money{"USD", 101} }, false},
		{"price dropped", func(r *CreateRequest) { r.Items[0].Expected = nil }, false},
		{"price added", func(r *CreateRequest) { r.Items[1].Expected = &Money{"USD", 0} }, false},
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

func TestOrderPrice(t *testing.T) {
	usd := func(units int64) Money { return Money{"USD", units} }
	tests := []struct {
		name       string
		items      []LineItem
		prices     map[string]Money
		wantReason string
		wantTotal  Money
	}{
		{"priced", []LineItem{item("A", 2), item("B", 1)}, map[string]Money{"A": usd(300), "B": usd(400)}, "", usd(1000)},
		{"at the expected price", []LineItem{priced("A", 2, "USD", 300)}, map[string]Money{"A": usd(300)}, "", usd(600)},
		{"price changed", []LineItem{priced("A", 2, "USD", 299), item("B", 1)}, map[string]Money{"A": usd(300), "B": usd(400)}, FailurePriceChanged, usd(1000)},
		{"expected in another currency", []LineItem{priced("A", 1, "EUR", 300)}, map[string]Money{"A": usd(300)}, FailurePriceChanged, usd(300)},
		{"missing product", []LineItem{item("A", 1), item("C", 1)}, map[string]Money{"A": usd(300)}, FailureProductNotFound, Money{}},
		{"products in two currencies", []LineItem{item("A", 1), item("B", 1)}, map[string]Money{"A": usd(300), "B": {"EUR", 1}}, FailureCurrencyMismatch, Money{}},
		{"free", []LineItem{item("A", 3)}, map[string]Money{"A": usd(0)}, FailureTotalOutOfRange, Money{}},
		{"negative price", []LineItem{item("A", 3)}, map[string]Money{"A": usd(-1)}, FailureTotalOutOfRange, Money{}},
		{"at the maximum", []LineItem{item("A", 1)}, map[string]Money{"A": usd(MaxUnits)}, "", usd(MaxUnits)},
		{"above the maximum", []LineItem{item("A", 2)}, map[string]Money{"A": usd(MaxUnits/2 + 1)}, FailureTotalOutOfRange, Money{}},
		{"line overflows", []LineItem{item("A", 10000)}, map[string]Money{"A": usd(math.MaxInt64 / 2)}, FailureTotalOutOfRange, Money{}},
		{"sum overflows", []LineItem{item("A", 1), item("B", 1)}, map[string]Money{"A": usd(math.MaxInt64), "B": usd(math.MaxInt64)}, FailureTotalOutOfRange, Money{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &Order{Items: tt.items}
			if got := o.price(tt.prices); got != tt.wantReason || o.Total != tt.wantTotal {
				t.Fatalf("price() = %q, total %v; want %q, %v", got, o.Total, tt.wantReason, tt.wantTotal)
			}
			if o.Priced() {
				for _, it := range o.Items {
					if it.UnitPrice != tt.prices[it.SKU] {
						t.Fatalf("item %s priced %v, want %v", it.SKU, it.UnitPrice, tt.prices[it.SKU])
					}
				}
			}
		})
	}
}

func TestOrderClone(t *testing.T) {
	o := &Order{Items: []LineItem{priced("A", 1, "USD", 5)}}
	c := o.Clone()
	c.Items[0].Quantity = 2
	c.Items[0].Expected.Units = 6
	if o.Items[0].Quantity != 1 || o.Items[0].Expected.Units != 5 {
		t.Fatalf("changing the clone changed the original: %+v", o.Items[0])
	}
}

// TestPaymentKey: an order's payment key carries its secret; an order
// stored before there were secrets keeps the key its saga began with.
func TestPaymentKey(t *testing.T) {
	tests := []struct {
		order Order
		want  string
	}{
		{Order{ID: "o1"}, "order-o1"},
		{Order{ID: "o1", ChargeSecret: "5ec2e7"}, "order-o1-5ec2e7"},
	}
	for _, tt := range tests {
		if got := PaymentKey(&tt.order); got != tt.want {
			t.Errorf("PaymentKey(%+v) = %q, want %q", tt.order, got, tt.want)
		}
	}
	a, b := newChargeSecret(), newChargeSecret()
	if len(a) != 32 || a == b {
		t.Errorf("secrets %q and %q: want 128 random bits each, in hex", a, b)
	}
}
