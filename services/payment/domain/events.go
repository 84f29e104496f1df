package domain

// EventKind says what happened to a payment.
type EventKind string

// The changes to a payment that other services hear about.
const (
	// EventCaptured: a charge was captured.
	EventCaptured EventKind = "captured"
	// EventDeclined: the provider declined a charge.
	EventDeclined EventKind = "declined"
	// EventRefunded: money of a payment went back, by Refund or CancelCharge.
	EventRefunded EventKind = "refunded"
)

// Event is a change to a payment, reported to other services. The service
// hands events to the Repository with the change itself, and the Repository
// records both in one transaction: an event is published exactly when its
// change committed.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// Payment is the payment after the change.
	Payment Payment
	// Amount is, for EventRefunded, how much this refund returned.
	Amount Money
}

// chargedEvent reports a newly recorded charge, captured or declined.
func chargedEvent(p *Payment) Event {
	kind := EventCaptured
	if p.Status == StatusDeclined {
		kind = EventDeclined
	}
	return Event{Kind: kind, Payment: *p}
}

// refundedEvent reports refund r of p, p as it stands after r.
func refundedEvent(p *Payment, r *Refund) Event {
	return Event{Kind: EventRefunded, Payment: *p, Amount: Money{Currency: p.Amount.Currency, Units: r.Units}}
}
