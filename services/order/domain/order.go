package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"regexp"
	"strconv"
	"time"
)

// MaxUnits is the largest order total in minor units: the most the payment
// service accepts in one charge, so every valid order can be paid.
const MaxUnits int64 = 100_000_000_000

// currencyPattern is an ISO 4217 alphabetic code in upper case.
var currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)

// Money is an amount of one currency in its minor unit (cents for USD).
type Money struct {
	// Currency is the ISO 4217 code, for example "USD".
	Currency string
	// Units is the amount in minor units.
	Units int64
}

// Status is where an order stands.
type Status string

// The only moves are PENDING to PAID and PENDING to PAYMENT_FAILED.
const (
	StatusPending       Status = "PENDING"
	StatusPaid          Status = "PAID"
	StatusPaymentFailed Status = "PAYMENT_FAILED"
)

// LineItem is one product line.
type LineItem struct {
	// SKU identifies the product.
	SKU string
	// Quantity is how many units, at least one.
	Quantity int32
	// UnitPrice is the price of one unit; every item of an order has the same currency.
	UnitPrice Money
}

// Order is a customer's purchase.
type Order struct {
	// ID is the server-assigned identifier.
	ID string
	// UserID is the customer.
	UserID string
	// Items is what was ordered, in request order.
	Items []LineItem
	// Total is the sum of quantity × unit price over Items.
	Total Money
	// Status is where the order stands.
	Status Status
	// PaymentID is the payment made for the order, once there is one.
	PaymentID string
	// FailureReason is the payment's decline reason when PAYMENT_FAILED.
	FailureReason string
	// IdempotencyKey is the key the order was created with.
	IdempotencyKey string
	// Fingerprint identifies the creating request, so a repeat of the key
	// with a different request is detected.
	Fingerprint string
	// CreateTime is when the order was created.
	CreateTime time.Time
	// UpdateTime is when the order last changed.
	UpdateTime time.Time
}

// MarkPaid records a captured payment. Only a PENDING order can be paid.
func (o *Order) MarkPaid(paymentID string, now time.Time) error {
	if o.Status != StatusPending {
		return fmt.Errorf("mark order %s paid: %w (it is %s)", o.ID, ErrInvalidTransition, o.Status)
	}
	o.Status, o.PaymentID, o.FailureReason, o.UpdateTime = StatusPaid, paymentID, "", now
	return nil
}

// MarkPaymentFailed records a declined payment and why. Only a PENDING
// order can fail.
func (o *Order) MarkPaymentFailed(paymentID, reason string, now time.Time) error {
	if o.Status != StatusPending {
		return fmt.Errorf("mark order %s failed: %w (it is %s)", o.ID, ErrInvalidTransition, o.Status)
	}
	o.Status, o.PaymentID, o.FailureReason, o.UpdateTime = StatusPaymentFailed, paymentID, reason, now
	return nil
}

// PaymentKey is the payment idempotency key of the order with the given id:
// every attempt to pay one order is the same charge, so retries never
// charge twice.
func PaymentKey(orderID string) string { return "order-" + orderID }

// CreateRequest asks to place an order.
type CreateRequest struct {
	// UserID is the customer.
	UserID string
	// Items is what to order.
	Items []LineItem
	// PaymentToken is the payment method to charge.
	PaymentToken string
	// IdempotencyKey makes retries safe.
	IdempotencyKey string
}

// Total checks the request and returns the order total. Every item must be
// priced in the same currency, at zero or more; the total must neither
// overflow nor exceed MaxUnits, and must be more than zero, since an order
// is paid by a charge and a charge takes money.
func (r CreateRequest) Total() (Money, error) {
	if r.UserID == "" {
		return Money{}, &FieldError{Field: "user_id", Description: "must not be empty"}
	}
	if len(r.Items) == 0 {
		return Money{}, &FieldError{Field: "items", Description: "must hold at least one item"}
	}
	if r.PaymentToken == "" {
		return Money{}, &FieldError{Field: "payment_token", Description: "must not be empty"}
	}
	if r.IdempotencyKey == "" {
		return Money{}, &FieldError{Field: "idempotency_key", Description: "must not be empty"}
	}
	total := Money{Currency: r.Items[0].UnitPrice.Currency}
	for i, it := range r.Items {
		path := "items[" + strconv.Itoa(i) + "]"
		switch {
		case it.SKU == "":
			return Money{}, &FieldError{Field: path + ".sku", Description: "must not be empty"}
		case it.Quantity < 1:
			return Money{}, &FieldError{Field: path + ".quantity", Description: "must be at least 1"}
		case !currencyPattern.MatchString(it.UnitPrice.Currency):
			return Money{}, &FieldError{Field: path + ".unit_price.currency_code", Description: "must be an ISO 4217 code in upper case, like USD"}
		case it.UnitPrice.Currency != total.Currency:
			return Money{}, &FieldError{
				Field:       path + ".unit_price.currency_code",
				Reason:      ReasonCurrencyMismatch,
				Description: fmt.Sprintf("must be %s, the currency of items[0]; an order has one currency", total.Currency),
			}
		case it.UnitPrice.Units < 0:
			return Money{}, &FieldError{Field: path + ".unit_price.units", Description: "must not be negative"}
		}
		line, ok := mul(int64(it.Quantity), it.UnitPrice.Units)
		if ok {
			total.Units, ok = add(total.Units, line)
		}
		if !ok || total.Units > MaxUnits {
			return Money{}, &FieldError{Field: "items", Description: fmt.Sprintf("order total must not exceed %d minor units", MaxUnits)}
		}
	}
	if total.Units == 0 {
		return Money{}, &FieldError{Field: "items", Description: "order total must be more than zero"}
	}
	return total, nil
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
// same request: the user, the items in order and the payment token (the
// idempotency key is what is being compared, so it is left out). Fields are
// length-prefixed so no two requests collide by concatenation.
func (r CreateRequest) Fingerprint() string {
	h := sha256.New()
	writeField(h, r.UserID)
	writeField(h, r.PaymentToken)
	writeField(h, strconv.Itoa(len(r.Items)))
	for _, it := range r.Items {
		writeField(h, it.SKU)
		writeField(h, strconv.FormatInt(int64(it.Quantity), 10))
		writeField(h, it.UnitPrice.Currency)
		writeField(h, strconv.FormatInt(it.UnitPrice.Units, 10))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	fmt.Fprintf(h, "%d:%s;", len(s), s)
}
