// Package wire converts the payment domain to its duet.payment.v1 wire
// form: the Payment message the API returns, and the events published
// through kit/events. The gRPC handler and the store share it, so a payment
// reads the same in a response and in an event.
package wire

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/services/payment/domain"
)

// Event subjects, relative to the bus prefix.
const (
	SubjectCaptured = "payment.captured"
	SubjectDeclined = "payment.declined"
	SubjectRefunded = "payment.refunded"
)

// Payment converts a domain payment to its API message.
func Payment(p *domain.Payment) *paymentv1.Payment {
	return &paymentv1.Payment{
		Id:             p.ID,
		Amount:         Money(p.Amount),
		Refunded:       Money(p.Refunded()),
		Status:         Status(p.Status),
		DeclineReason:  p.DeclineReason,
		Reference:      p.Reference,
		IdempotencyKey: p.IdempotencyKey,
		CreateTime:     timestamppb.New(p.CreateTime),
		UpdateTime:     timestamppb.New(p.UpdateTime),
		UserId:         p.UserID,
		RefundPending:  Money(p.RefundPending()),
	}
}

// Money converts domain money to its API message.
func Money(m domain.Money) *typev1.Money {
	return &typev1.Money{CurrencyCode: m.Currency, Units: m.Units}
}

// Status converts a domain status to its API enum.
func Status(s domain.Status) paymentv1.PaymentStatus {
	switch s {
	case domain.StatusCaptured:
		return paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED
	case domain.StatusDeclined:
		return paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED
	case domain.StatusPartiallyRefunded:
		return paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED
	case domain.StatusRefunded:
		return paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED
	}
	return paymentv1.PaymentStatus_PAYMENT_STATUS_UNSPECIFIED
}

// Event converts a domain event to the outbox event published for it; the
// payment id is the aggregate id.
func Event(e domain.Event) (events.Event, error) {
	p := Payment(&e.Payment)
	ev := events.Event{AggregateID: e.Payment.ID}
	switch e.Kind {
	case domain.EventCaptured:
		ev.Subject, ev.Message = SubjectCaptured, &paymentv1.PaymentCaptured{Payment: p}
	case domain.EventDeclined:
		ev.Subject, ev.Message = SubjectDeclined, &paymentv1.PaymentDeclined{Payment: p}
	case domain.EventRefunded:
		ev.Subject, ev.Message = SubjectRefunded, &paymentv1.PaymentRefunded{Payment: p, Amount: Money(e.Amount)}
	default:
		return events.Event{}, fmt.Errorf("payment event of unknown kind %q", e.Kind)
	}
	return ev, nil
}
