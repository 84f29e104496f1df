package domain

import (
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/duetkit/duet/kit/iso4217"
)

// MaxUnits is the largest order total in minor units: the most the payment
// service accepts in one charge, so every valid order can be paid.
const MaxUnits int64 = 100_000_000_000

// Money is an amount of one currency in its minor unit (cents for USD).
type Money struct {
	// Currency is the ISO 4217 code, for example "USD".
	Currency string
	// Units is the amount in minor units.
	Units int64
}

// Status is where an order stands.
type Status string

// An order is PENDING while its saga runs and ends in one of the three
// terminal statuses.
const (
	// StatusPending: the saga is running; see Order.Step.
	StatusPending Status = "PENDING"
	// StatusConfirmed: stock committed and payment captured.
	StatusConfirmed Status = "CONFIRMED"
	// StatusCancelled: the saga gave up after it had started to act (a
	// declined payment, a peer down for too long); whatever it reserved or
	// charged was released or refunded.
	StatusCancelled Status = "CANCELLED"
	// StatusRejected: the shop said no before anything was charged (unknown
	// user or product, changed price, not enough stock).
	StatusRejected Status = "REJECTED"
)

// Terminal reports whether the saga of an order in status s has ended.
func (s Status) Terminal() bool { return s != StatusPending }

// Failure reasons, the stable values of Order.FailureReason. The payment
// service's decline reasons (PAYMENT_DECLINED, INSUFFICIENT_FUNDS) are
// passed on as they are.
const (
	// FailureUserNotFound (REJECTED): the customer does not exist.
	FailureUserNotFound = "USER_NOT_FOUND"
	// FailureProductNotFound (REJECTED): an item's sku names no product.
	FailureProductNotFound = "PRODUCT_NOT_FOUND"
	// FailurePriceChanged (REJECTED): a unit price the client sent differs
	// from inventory's; the order shows the current prices.
	FailurePriceChanged = "PRICE_CHANGED"
	// FailureCurrencyMismatch (REJECTED): the products are priced in more
	// than one currency, and an order has one.
	FailureCurrencyMismatch = "CURRENCY_MISMATCH"
	// FailureTotalOutOfRange (REJECTED): the total is zero or above MaxUnits.
	FailureTotalOutOfRange = "TOTAL_OUT_OF_RANGE"
	// FailureOutOfStock (REJECTED): not enough stock for every line.
	FailureOutOfStock = "OUT_OF_STOCK"
	// FailurePaymentDeclined (CANCELLED) is used when the payment service
	// declined without saying why.
	FailurePaymentDeclined = "PAYMENT_DECLINED"
	// FailureInvalidPaymentMethod (CANCELLED): the payment service does not
	// know the payment token.
	FailureInvalidPaymentMethod = "INVALID_PAYMENT_METHOD"
	// FailurePaymentRefused (CANCELLED): the payment service refused the
	// charge for another reason than a decline (the charge key was
	// cancelled or used for another amount, or the charge was invalid to
	// it, such as a price in a currency it does not know); any charge made
	// was refunded.
	FailurePaymentRefused = "PAYMENT_REFUSED"
	// FailureReservationReleased (CANCELLED): inventory had released the
	// order's reservation, so it could not be committed.
	FailureReservationReleased = "RESERVATION_RELEASED"
	// FailureUsersUnavailable (CANCELLED): the user service stayed down for
	// longer than the step bound, or refused the call for good.
	FailureUsersUnavailable = "USER_SERVICE_UNAVAILABLE"
	// FailureInventoryUnavailable (CANCELLED): the inventory service stayed
	// down for longer than the step bound, or refused a call for good.
	FailureInventoryUnavailable = "INVENTORY_UNAVAILABLE"
	// FailurePaymentUnavailable (CANCELLED): the payment service stayed down
	// for longer than the step bound; the charge, if it was made, was
	// refunded, and if not, it never will be.
	FailurePaymentUnavailable = "PAYMENT_UNAVAILABLE"
	// FailureLegacyPending (CANCELLED): the order was left PENDING by a
	// version of the service before the saga; its charge, if any, was
	// refunded.
	FailureLegacyPending = "LEGACY_PENDING"
)

// LineItem is one product line.
type LineItem struct {
	// SKU identifies the product.
	SKU string
	// Quantity is how many units, at least one.
	Quantity int32
	// UnitPrice is the price of one unit from inventory; the zero Money
	// until the order is priced.
	UnitPrice Money
	// Expected is the unit price the client said it expects, nil when it
	// sent none. Pricing rejects the order if inventory's price differs.
	Expected *Money
}

// Order is a customer's purchase and the state of its saga.
type Order struct {
	// ID is the server-assigned identifier.
	ID string
	// UserID is the customer.
	UserID string
	// Items is what was ordered, in request order.
	Items []LineItem
	// Total is the sum of quantity × unit price over Items; the zero Money
	// until the order is priced.
	Total Money
	// Status is where the order stands.
	Status Status
	// Step is the saga step to run next, or StepDone once Status is terminal.
	Step Step
	// FailedStep is the forward step whose failure started compensation;
	// empty while the saga goes forward. It decides what compensation does
	// after each of its steps.
	FailedStep Step
	// Attempts counts the failed attempts at Step.
	Attempts int
	// NextAttempt is when Step may be tried next.
	NextAttempt time.Time
	// StepDeadline is when a forward step that keeps failing temporarily is
	// given up and compensated; zero for compensation steps, which never
	// give up.
	StepDeadline time.Time
	// LastError describes the latest failed attempt, for operators.
	LastError string
	// PaymentID is the payment made for the order, once there is one.
	PaymentID string
	// FailureReason is why the order is, or is being, cancelled or
	// rejected (see the Failure constants); empty otherwise.
	FailureReason string
	// PaymentToken is the payment method to charge.
	PaymentToken string
	// RequestID is the request id of the call that created the order; the
	// saga's calls to other services carry it.
	RequestID string
	// TraceParent is the W3C traceparent of the call that created the
	// order, empty when it had none; the saga's calls continue its trace.
	TraceParent string
	// IdempotencyKey is the key the order was created with.
	IdempotencyKey string
	// Fingerprint identifies the creating request, so a repeat of the key
	// with a different request is detected.
	Fingerprint string
	// ChargeSecret makes the order's payment key (PaymentKey) one that
	// nobody outside the service can name before the saga charges: random,
	// set at creation, not part of the order the API shows (the payment,
	// once made, shows its key). Empty for orders created before it
	// existed.
	ChargeSecret string
	// Version counts the stored changes of the order; a change is stored
	// only over the version it was computed from.
	Version int64
	// CreateTime is when the order was created.
	CreateTime time.Time
	// UpdateTime is when the order last changed.
	UpdateTime time.Time
}

// Clone returns a deep copy of o, which may be changed without touching o.
func (o *Order) Clone() *Order {
	c := *o
	c.Items = slices.Clone(o.Items)
	for i, it := range c.Items {
		if it.Expected != nil {
			e := *it.Expected
			c.Items[i].Expected = &e
		}
	}
	return &c
}

// Priced reports whether the order's items carry inventory's prices.
func (o *Order) Priced() bool { return o.Total.Currency != "" }

// PaymentKey is the payment idempotency key of the order: every attempt
// to pay one order is the same charge, so retries never charge twice, and
// cancelling it (payment CancelCharge) names it. It carries the order's
// ChargeSecret: keys share one space with the payment API's other
// callers, and "order-" + id alone, the id being the client's to see,
// let anyone charge or cancel under an order's key first, so that the
// order failed, or was confirmed against a payment it did not make.
func PaymentKey(o *Order) string {
	if o.ChargeSecret == "" {
		return "order-" + o.ID // created before ChargeSecret; its saga goes on with the key it began with
	}
	return "order-" + o.ID + "-" + o.ChargeSecret
}

// newChargeSecret returns 128 random bits in hex.
func newChargeSecret() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// StockLine is a quantity of one sku, as reserved.
type StockLine struct {
	// SKU is the product.
	SKU string
	// Quantity is how many units.
	Quantity int32
}

// StockLines returns the order's lines as reserved with inventory.
func (o *Order) StockLines() []StockLine {
	lines := make([]StockLine, len(o.Items))
	for i, it := range o.Items {
		lines[i] = StockLine{SKU: it.SKU, Quantity: it.Quantity}
	}
	return lines
}

// SKUs returns the skus of the order's items, in order.
func (o *Order) SKUs() []string {
	skus := make([]string, len(o.Items))
	for i, it := range o.Items {
		skus[i] = it.SKU
	}
	return skus
}

// price sets the items' unit prices and the total from inventory's prices
// and returns the failure reason that rejects the order, "" if none. When
// the only problem is a changed price, the current prices are kept, so the
// rejected order shows what the items cost now.
func (o *Order) price(prices map[string]Money) string {
	var total Money
	for i, it := range o.Items {
		p, ok := prices[it.SKU]
		switch {
		case !ok:
			return FailureProductNotFound
		case i == 0:
			total.Currency = p.Currency
		case p.Currency != total.Currency:
			return FailureCurrencyMismatch
		}
		if p.Units < 0 {
			return FailureTotalOutOfRange
		}
		line, ok := mul(int64(it.Quantity), p.Units)
		if ok {
			total.Units, ok = add(total.Units, line)
		}
		if !ok || total.Units > MaxUnits {
			return FailureTotalOutOfRange
		}
	}
	if total.Units <= 0 {
		return FailureTotalOutOfRange
	}
	reason := ""
	for i := range o.Items {
		it := &o.Items[i]
		it.UnitPrice = prices[it.SKU]
		if it.Expected != nil && *it.Expected != it.UnitPrice {
			reason = FailurePriceChanged
		}
	}
	o.Total = total
	return reason
}

// CreateRequest asks to place an order.
type CreateRequest struct {
	// UserID is the customer.
	UserID string
	// Items is what to order; Expected prices are optional, UnitPrice is
	// ignored (inventory sets it).
	Items []LineItem
	// PaymentToken is the payment method to charge.
	PaymentToken string
	// IdempotencyKey makes retries safe.
	IdempotencyKey string
	// RequestID is the caller's request id, kept for the saga's calls.
	RequestID string
	// TraceParent is the caller's W3C traceparent, kept for the saga's
	// calls.
	TraceParent string
}

// Validate checks what can be checked without asking other services: every
// field is present, skus are unique within the order, quantities are
// positive, and the prices the client sent, if any, are well-formed and in
// one currency.
func (r CreateRequest) Validate() error {
	switch {
	case r.UserID == "":
		return &FieldError{Field: "user_id", Description: "must not be empty"}
	case len(r.Items) == 0:
		return &FieldError{Field: "items", Description: "must hold at least one item"}
	case r.PaymentToken == "":
		return &FieldError{Field: "payment_token", Description: "must not be empty"}
	case r.IdempotencyKey == "":
		return &FieldError{Field: "idempotency_key", Description: "must not be empty"}
	}
	currency := ""
	seen := make(map[string]int, len(r.Items))
	for i, it := range r.Items {
		path := "items[" + strconv.Itoa(i) + "]"
		if it.SKU == "" {
			return &FieldError{Field: path + ".sku", Description: "must not be empty"}
		}
		if j, dup := seen[it.SKU]; dup {
			return &FieldError{Field: path + ".sku", Description: fmt.Sprintf("repeats items[%d].sku; put the whole quantity of a product on one line", j)}
		}
		seen[it.SKU] = i
		if it.Quantity < 1 {
			return &FieldError{Field: path + ".quantity", Description: "must be at least 1"}
		}
		e := it.Expected
		if e == nil {
			continue
		}
		switch {
		case !iso4217.Valid(e.Currency):
			return &FieldError{Field: path + ".unit_price.currency_code", Description: "must be an ISO 4217 code in upper case, like USD"}
		case currency != "" && e.Currency != currency:
			return &FieldError{
				Field:       path + ".unit_price.currency_code",
				Reason:      ReasonCurrencyMismatch,
				Description: fmt.Sprintf("must be %s, like the other prices sent; an order has one currency", currency),
			}
		case e.Units < 0:
			return &FieldError{Field: path + ".unit_price.units", Description: "must not be negative"}
		}
		currency = e.Currency
	}
	return nil
}

// mul returns a×b for non-negative a and b, and false when it overflows.
func mul(a, b int64) (int64, bool) {
	if a != 0 && b > math.MaxInt64/a {
		return 0, false
	}
	return a * b, true
}

// add returns a+b for non-negative a and b, and false when it overflows.
func add(a, b int64) (int64, bool) {
	if a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}

// Fingerprint is a digest of everything that makes two create requests the
// same request: the user, the items in order with the prices sent, and the
// payment token (the idempotency key is what is being compared, and the
// request id differs between retries, so both are left out). Fields are
// length-prefixed so no two requests collide by concatenation; an item
// without a price writes "-" twice, which no valid currency can be, and an
// item with one writes what versions before the saga wrote, so their
// orders still match their retries.
func (r CreateRequest) Fingerprint() string {
	h := sha256.New()
	writeField(h, r.UserID)
	writeField(h, r.PaymentToken)
	writeField(h, strconv.Itoa(len(r.Items)))
	for _, it := range r.Items {
		writeField(h, it.SKU)
		writeField(h, strconv.FormatInt(int64(it.Quantity), 10))
		if it.Expected == nil {
			writeField(h, "-")
			writeField(h, "-")
			continue
		}
		writeField(h, it.Expected.Currency)
		writeField(h, strconv.FormatInt(it.Expected.Units, 10))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	fmt.Fprintf(h, "%d:%s;", len(s), s)
}
