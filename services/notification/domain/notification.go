// Package domain holds the notification service's rules: which of the
// shop's events call for a message to a user and what that message says,
// what the audit log keeps of every event, how notifications are paged and
// acknowledged, and how subscribers learn that new ones exist.
//
// It knows nothing of gRPC, SQL or NATS. Adapters decode events into an
// Occurrence (services/notification/consumer), store notifications and the
// audit log (services/notification/store) and serve them
// (services/notification/grpchandler).
package domain

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/duetkit/duet/kit/iso4217"
)

// ValidationError is bad input to a domain operation; the gRPC handler
// maps it to INVALID_ARGUMENT naming the field. It is the only error the
// domain itself makes: the rest come from the Repository.
type ValidationError struct {
	// Field names the offending argument ("user_id", "page_size", …).
	Field string
	// Description says what is wrong, in words safe to show a client.
	Description string
}

// Error implements error.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Description)
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Description: fmt.Sprintf(format, args...)}
}

// CheckID reports whether id is a UUID, naming field when it is not.
func CheckID(field, id string) error {
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return invalid(field, "must be a UUID")
	}
	return nil
}

// Kind is what a notification is about. The values are stored, so they
// never change.
type Kind string

// The kinds of notification.
const (
	KindWelcome        Kind = "WELCOME"
	KindAccountChanged Kind = "ACCOUNT_CHANGED"
	KindOrderConfirmed Kind = "ORDER_CONFIRMED"
	KindOrderCancelled Kind = "ORDER_CANCELLED"
	KindOrderRejected  Kind = "ORDER_REJECTED"
	KindRefund         Kind = "REFUND"
)

// Notification is one message to a user, made from one event.
type Notification struct {
	// ID is a UUID (version 7, so ids grow with creation time).
	ID string
	// UserID is the user it is for.
	UserID string
	// Kind is what it is about.
	Kind Kind
	// Title and Body are the text to show.
	Title, Body string
	// SubjectID is the order, payment or user it is about.
	SubjectID string
	// EventID is the event that caused it; an event causes at most one.
	EventID string
	// CreateTime is when the service made it.
	CreateTime time.Time
	// AckTime is when the user's client acknowledged it; zero until then.
	AckTime time.Time
}

// Acked reports whether the user's client has acknowledged n.
func (n Notification) Acked() bool { return !n.AckTime.IsZero() }

// Event is one event as the audit log keeps it: every event the service
// consumes, whether or not it makes a notification.
type Event struct {
	// ID is the event's id, unique across the shop (its Nats-Msg-Id).
	ID string
	// Type is the protobuf full name of the payload, like
	// "duet.order.v1.OrderConfirmed".
	Type string
	// AggregateID is the user, order or payment the event is about.
	AggregateID string
	// Subject is the subject the event was published on.
	Subject string
	// RequestID and TraceID name the request that caused the event, when
	// known.
	RequestID, TraceID string
	// OccurTime is when the event happened, by the producer's clock.
	OccurTime time.Time
	// RecordTime is when the audit log recorded it; the log is ordered by it.
	RecordTime time.Time
	// Payload is the event message, protobuf binary, exactly as received.
	Payload []byte
}

// Money is an amount in minor units of a currency.
type Money struct {
	// Currency is the ISO 4217 code, for example "USD".
	Currency string
	// Units is the amount in minor units.
	Units int64
}

// String formats m for people: "19.99 USD", "500 JPY", "1.500 KWD", with
// as many decimals as the currency's minor unit has (ISO 4217).
func (m Money) String() string {
	if m.Currency == "" {
		return ""
	}
	digits := iso4217.MinorDigits(m.Currency)
	if digits == 0 {
		return fmt.Sprintf("%d %s", m.Units, m.Currency)
	}
	sign := ""
	u := uint64(m.Units)
	if m.Units < 0 {
		sign, u = "-", -u // two's complement: right for math.MinInt64 too
	}
	scale := uint64(1)
	for range digits {
		scale *= 10
	}
	return fmt.Sprintf("%s%d.%0*d %s", sign, u/scale, digits, u%scale, m.Currency)
}

// Happening is what an event reports, as far as notifications care.
type Happening int

// The happenings notifications know about. Anything else is HappeningOther:
// audited, never notified.
const (
	HappeningOther Happening = iota
	UserCreated
	UserUpdated
	OrderConfirmed
	OrderCancelled
	OrderRejected
	PaymentRefunded
)

// Occurrence is an event decoded into the facts the notification rules
// need. The consumer adapter fills it from the event's payload.
type Occurrence struct {
	// What happened.
	What Happening
	// UserID is the user to tell; empty when the event names none.
	UserID string
	// SubjectID is the user, order or payment the event is about.
	SubjectID string
	// UserName is the user's name, for a welcome.
	UserName string
	// Amount is the order total, or the amount refunded.
	Amount Money
	// Reason is why an order failed, as the order service put it.
	Reason string
	// Changed names the user fields an update changed.
	Changed []string
}

// Message is the part of a notification the rules decide.
type Message struct {
	// Kind is what it is about.
	Kind Kind
	// UserID is who it is for.
	UserID string
	// SubjectID is what it is about.
	SubjectID string
	// Title and Body are its text.
	Title, Body string
}

// Compose returns the message o calls for, and false when it calls for
// none: a happening users are not told about, or one that names no user
// (a refund of a payment made before payments knew their user, say).
func Compose(o Occurrence) (Message, bool) {
	if o.UserID == "" {
		return Message{}, false
	}
	m := Message{UserID: o.UserID, SubjectID: o.SubjectID}
	switch o.What {
	case UserCreated:
		m.Kind = KindWelcome
		m.Title = "Welcome to Duet"
		if name := strings.TrimSpace(o.UserName); name != "" {
			m.Body = fmt.Sprintf("Hello %s, your account is ready.", name)
		} else {
			m.Body = "Your account is ready."
		}
	case UserUpdated:
		m.Kind = KindAccountChanged
		m.Title = "Your account changed"
		if len(o.Changed) > 0 {
			m.Body = fmt.Sprintf("These account details changed: %s. If this was not you, contact us.", strings.Join(o.Changed, ", "))
		} else {
			m.Body = "Your account details changed. If this was not you, contact us."
		}
	case OrderConfirmed:
		m.Kind = KindOrderConfirmed
		m.Title = "Order confirmed"
		m.Body = "Your order " + o.SubjectID + " is confirmed" + forAmount(o.Amount) + "."
	case OrderCancelled:
		m.Kind = KindOrderCancelled
		m.Title = "Order cancelled"
		m.Body = "Your order " + o.SubjectID + " was cancelled" + because(o.Reason) + ". Any charge for it is refunded."
	case OrderRejected:
		m.Kind = KindOrderRejected
		m.Title = "Order not accepted"
		m.Body = "Your order " + o.SubjectID + " could not be accepted" + because(o.Reason) + ". Nothing was charged."
	case PaymentRefunded:
		m.Kind = KindRefund
		m.Title = "Refund issued"
		if amount := o.Amount.String(); amount != "" {
			m.Body = fmt.Sprintf("%s was refunded for payment %s.", amount, o.SubjectID)
		} else {
			m.Body = "A refund was issued for payment " + o.SubjectID + "."
		}
	default:
		return Message{}, false
	}
	return m, true
}

func forAmount(m Money) string {
	if s := m.String(); s != "" {
		return " for " + s
	}
	return ""
}

func because(reason string) string {
	if reason = strings.TrimSpace(reason); reason != "" {
		return " (" + reason + ")"
	}
	return ""
}
